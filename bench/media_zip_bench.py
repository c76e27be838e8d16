"""How fast the patient's "download for another hospital" streams (issue 14): the ZIP of the
DICOM files with a DICOMDIR (imaging.media.media_zip), against reading the same stored files.

Creates a throw-away database (test_<name of DATABASE_URL's database>) and a throw-away
storage directory, stores a patient's CT studies of 512x512 slices through ingest, then times,
each `--runs` times (the files in the page cache, as on a server that just stored them):
  - reading every stored file (what "disk speed" means here),
  - media_zip alone (the DICOMDIR from the index, the files read in chunks, no HTTP),
  - the film page's download through Django (a verified film session, the streamed response),
and prints MB/s and the peak memory of the media_zip run (tracemalloc).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_zip \
        .venv/bin/python bench/media_zip_bench.py [--studies 3 --slices 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="zipbench-"))

import django  # noqa: E402

django.setup()

from django.test import Client, override_settings  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

MB = 1024 * 1024


def build(studies: int, slices: int) -> tuple[list[object], object]:
    from alliance.access import resolve_principal
    from imaging import films
    from imaging.ingest import ingest_bytes
    from tests import factories
    from tests.imaging.dicomgen import make_ct_series, part10_bytes

    alliance = factories.AllianceFactory(name="Zip Bench Alliance")
    clinic = factories.make_institution(alliance=alliance, level="township", name="Zip Clinic", ae_title="ZIPCLIN")
    doctor = factories.make_doctor(institution=clinic)
    stored = []
    for n in range(studies):
        series = make_ct_series(slices, 512, 512, patient_id="ZIP-1", study_description=f"CT {n}")
        for ds in series:
            ds.PatientBirthDate = "19600102"
            result = ingest_bytes(
                part10_bytes(ds), institution=clinic, actor=resolve_principal(doctor.user).actor, via="bench"
            )
        stored.append(result.study)
    made = films.film_create(studies=stored, by=resolve_principal(doctor.user), verify="dob")
    return stored, made


def timed(label: str, total: int, runs: int, once: object) -> dict[str, float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        got = once()  # type: ignore[operator]
        seconds.append(time.perf_counter() - start)
        assert got >= total, (label, got, total)
    best, median = min(seconds), statistics.median(seconds)
    return {"label": label, "MB": got / MB, "median_s": median, "MBps": got / MB / median, "best_MBps": got / MB / best}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=3)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    old = setup_databases(verbosity=0, interactive=False)
    try:
        with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
            run(args)
    finally:
        teardown_databases(old, verbosity=0)


def run(args: argparse.Namespace) -> None:
    from django.urls import reverse

    from imaging import storage
    from imaging.media import media_zip
    from imaging.models import Instance

    studies, made = build(args.studies, args.slices)
    instances = list(Instance.objects.filter(series__study__in=studies))
    total = sum(i.size_bytes for i in instances)

    def read_files() -> int:
        got = 0
        for instance in instances:
            with storage.open_instance(instance) as handle:
                while chunk := handle.read(MB):
                    got += len(chunk)
        return got

    def zip_alone() -> int:
        return sum(len(chunk) for chunk in media_zip(studies))

    client = Client()
    answer = client.post(made.path, {"answer": "1960-01-02"})
    assert answer.status_code == 303, answer.status_code
    url = reverse("films:download", args=[made.handle])

    def through_django() -> int:
        response = client.get(url)
        assert response.status_code == 200 and response.streaming
        return sum(len(chunk) for chunk in response.streaming_content)

    rows = [
        timed("read the stored files", total, args.runs, read_files),
        timed("media_zip (DICOMDIR + files)", total, args.runs, zip_alone),
        timed("film download through Django", total, args.runs, through_django),
    ]
    tracemalloc.start()
    zip_alone()
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{len(instances)} files, {total / MB:.1f} MB stored; {args.runs} runs each, median")
    print("| what | MB out | median s | MB/s (median) | MB/s (best) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['MB']:.1f} | {r['median_s']:.3f} | {r['MBps']:.0f} | {r['best_MBps']:.0f} |")
    print(f"media_zip peak traced memory: {peak / MB:.2f} MB for a {rows[1]['MB']:.0f} MB zip")


if __name__ == "__main__":
    main()
