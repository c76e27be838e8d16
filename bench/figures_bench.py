"""The figures pages on a year of a region (issue 16 item 3): 1.5 million studies, 200,000 consults.

Fills its own database (FIGBENCH_URL, default postgres://postgres@127.0.0.1:5432/alliance_figbench;
created and migrated if missing, filled once and kept for later runs; --rebuild drops it)
with one alliance of 2 hospitals and 20 clinics, 300,000 patients, 1.5 million studies
received over the last 365 days, 200,000 consults requested over the same year (5% STAT,
15% ASAP, 30% urgent, 50% routine; turnaround exponential around a third of the deadline;
the last day's partly open) with their claim, sign and request transitions. Rows are made
by INSERT ... SELECT over generate_series inside PostgreSQL, not by the ORM row by row.
Then it times each figures page in-process (django.test.Client: the Django stack and the
database, no network) and prints p50, p95 and the queries per page as Markdown.

    .venv/bin/python bench/figures_bench.py [--runs 30] [--rebuild]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

URL = os.environ.get("FIGBENCH_URL", "postgres://postgres@127.0.0.1:5432/alliance_figbench")
os.environ["DATABASE_URL"] = URL
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")

import django  # noqa: E402
import psycopg2  # noqa: E402

STUDIES = 1_500_000
CONSULTS = 200_000
PATIENTS = 300_000
CLINICS = 20
SPECIALISTS = 30
# The three admins' password, for looking at the pages in a browser (a throw-away database).
BENCH_PASSWORD = "Bench-figures-2026!"  # noqa: S105
ADMINS = ("region_admin", "rh1_admin", "tc01_admin")


def ensure_database(rebuild: bool) -> None:
    base, name = URL.rsplit("/", 1)
    admin = psycopg2.connect(f"{base}/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        exists = cursor.fetchone()
        if exists and rebuild:
            cursor.execute(f'DROP DATABASE "{name}"')
            exists = None
        if not exists:
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()


def build_people() -> dict[str, Any]:
    from tests import factories

    alliance = factories.AllianceFactory(name="Bench Region")
    hospitals = [
        factories.make_institution(alliance=alliance, level="tertiary", name=f"Region Hospital {i}", ae_title=f"RH{i}")
        for i in (1, 2)
    ]
    clinics = [
        factories.make_institution(
            alliance=alliance, name=f"Township Clinic {i:02d}", ae_title=f"TC{i:02d}", parent=hospitals[i % 2]
        )
        for i in range(1, CLINICS + 1)
    ]
    office = factories.make_institution(alliance=alliance, name="Region Office", ae_title="ROFFICE")
    radiology = factories.SpecialtyFactory()
    specialists = [
        factories.make_doctor(
            institution=hospitals[i % 2], roles=["specialist"], specialties=[radiology], full_name=f"Reader {i:02d}"
        )
        for i in range(SPECIALISTS)
    ]
    pools = [
        factories.make_pool(institution=h, members=[s for s in specialists if s.institution_id == h.pk], name="Desk")
        for h in hospitals
    ]
    clinicians = [factories.make_doctor(institution=c) for c in clinics]
    factories.make_doctor(institution=office, roles=["alliance_admin"], username="region_admin")
    factories.make_doctor(institution=hospitals[0], roles=["institution_admin"], username="rh1_admin")
    factories.make_doctor(institution=clinics[0], roles=["institution_admin"], username="tc01_admin")
    return {
        "hospitals": [h.pk for h in hospitals],
        "clinics": [c.pk for c in clinics],
        "clinicians": [d.pk for d in clinicians],
        "specialists": [d.pk for d in specialists],
        "pools": [p.pk for p in pools],
    }


PATIENTS_SQL = """
INSERT INTO imaging_patient (issuer_id, patient_id, name, birth_date, sex, created_at)
SELECT (%(institutions)s::int[])[1 + (g %% cardinality(%(institutions)s::int[]))], 'BP' || g,
       'Bench^Patient' || g, NULL, CASE WHEN g %% 2 = 0 THEN 'F' ELSE 'M' END, now()
FROM generate_series(1, %(patients)s) g
"""

# Hospitals appear five times in the issuers' list: they make most of the region's images.
STUDIES_SQL = """
WITH t AS (
  SELECT g, now() - random() * interval '365 days' AS r,
         (ARRAY['DX','DX','DX','DX','CR','CT','CT','CT','MR','US','US','MG'])[1 + floor(random() * 12)::int] AS m
  FROM generate_series(1, %(studies)s) g
)
INSERT INTO imaging_study (study_uid, patient_id, institution_id, study_date, study_time, accession_number,
  study_id, description, referring_physician, modalities, num_series, num_instances, size_bytes,
  received_at, updated_at)
SELECT '2.25.9' || t.g, p.id, p.issuer_id, t.r::date, NULL, 'B' || t.g, '', 'Bench study', '', t.m, 3, 100,
       (CASE t.m WHEN 'CT' THEN 150e6 WHEN 'MR' THEN 80e6 WHEN 'MG' THEN 60e6 WHEN 'US' THEN 5e6 ELSE 12e6 END
        * (0.5 + random()))::bigint,
       t.r, t.r
FROM t JOIN imaging_patient p ON p.id = %(first_patient)s + (t.g %% %(patients)s)
"""

CONSULTS_SQL = """
WITH t AS (
  SELECT g, now() - random() * interval '365 days' AS req, random() AS pr, random() AS u,
         -ln(1 - random()) AS e,
         (ARRAY['DX','DX','CT','CT','CT','MR','MR','US'])[1 + floor(random() * 8)::int] AS m
  FROM generate_series(1, %(consults)s) g
), p AS (
  SELECT t.*,
    CASE WHEN pr < 0.05 THEN 'stat' WHEN pr < 0.20 THEN 'asap' WHEN pr < 0.50 THEN 'urgent' ELSE 'routine' END AS pri,
    CASE WHEN pr < 0.05 THEN 3600 WHEN pr < 0.20 THEN 7200 WHEN pr < 0.50 THEN 28800 ELSE 86400 END AS dl,
    1 + (g %% cardinality(%(clinicians)s::int[])) AS k
  FROM t
), q AS (
  SELECT p.*, dl * e * 0.35 AS turn, req + make_interval(secs => dl * e * 0.35) <= now() AS done FROM p
)
INSERT INTO consults_consult (requester_id, requesting_institution_id, question, history, priority, priority_rank,
  pool_id, specialist_id, owner_id, status, reason, second_opinion_of_id, created_at, requested_at, claimed_at,
  completed_at, deadline_seconds, claim_timeout_seconds, due_at, claim_due_at, paused_seconds, paused_since,
  remind_50_at, remind_80_at, reminded_50, reminded_80, widened_at, breached_at, modality)
SELECT (%(clinicians)s::int[])[k], (%(clinics)s::int[])[k], 'Bench question', '', pri,
  CASE pri WHEN 'stat' THEN 0 WHEN 'asap' THEN 1 WHEN 'urgent' THEN 2 ELSE 3 END,
  (%(pools)s::int[])[1 + (k %% 2)], NULL,
  CASE WHEN done OR u >= 0.4 THEN (%(specialists)s::int[])[1 + (g %% cardinality(%(specialists)s::int[]))] END,
  CASE WHEN done THEN 'completed' WHEN u < 0.4 THEN 'requested' WHEN u < 0.7 THEN 'accepted'
       WHEN u < 0.9 THEN 'in-progress' ELSE 'on-hold' END,
  '', NULL, req, req,
  CASE WHEN done OR u >= 0.4 THEN req + make_interval(secs => turn * 0.2) END,
  CASE WHEN done THEN req + make_interval(secs => turn) END,
  dl, dl / 6, req + make_interval(secs => dl), req + make_interval(secs => dl / 6), 0, NULL,
  req + make_interval(secs => dl / 2), req + make_interval(secs => dl * 0.8), false, false, NULL,
  CASE WHEN turn > dl THEN req + make_interval(secs => dl) END,
  m
FROM q
"""

TRANSITIONS_SQL = """
INSERT INTO consults_consulttransition (consult_id, action, from_status, to_status, by_id, at, reason)
SELECT c.id, 'request', 'draft', 'requested', r.user_id, c.requested_at, ''
  FROM consults_consult c JOIN alliance_doctor r ON r.id = c.requester_id
UNION ALL
SELECT c.id, 'claim', 'requested', 'accepted', o.user_id, c.claimed_at, ''
  FROM consults_consult c JOIN alliance_doctor o ON o.id = c.owner_id WHERE c.claimed_at IS NOT NULL
UNION ALL
SELECT c.id, 'sign', 'in-progress', 'completed', o.user_id, c.completed_at, ''
  FROM consults_consult c JOIN alliance_doctor o ON o.id = c.owner_id WHERE c.completed_at IS NOT NULL
"""

CONSULT_STUDIES_SQL = """
INSERT INTO consults_consult_studies (consult_id, study_id)
SELECT c.id, %(first_study)s + (c.id * 7) %% %(studies)s FROM consults_consult c
"""


def build() -> None:
    from django.db import connection, transaction

    started = time.perf_counter()
    with transaction.atomic():
        people = build_people()
        with connection.cursor() as cursor:
            institutions = people["hospitals"] * 5 + people["clinics"]
            cursor.execute(PATIENTS_SQL, {"institutions": institutions, "patients": PATIENTS})
            cursor.execute("SELECT min(id) FROM imaging_patient WHERE patient_id LIKE 'BP%%'")
            first_patient = cursor.fetchone()[0]
            cursor.execute(STUDIES_SQL, {"studies": STUDIES, "patients": PATIENTS, "first_patient": first_patient})
            print(f"  studies: {time.perf_counter() - started:.0f} s", flush=True)
            cursor.execute(CONSULTS_SQL, {**people, "consults": CONSULTS})
            cursor.execute(TRANSITIONS_SQL)
            cursor.execute("SELECT min(id) FROM imaging_study WHERE study_uid LIKE '2.25.9%%'")
            cursor.execute(CONSULT_STUDIES_SQL, {"first_study": cursor.fetchone()[0], "studies": STUDIES})
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"built in {time.perf_counter() - started:.0f} s", flush=True)


def measure(client: Any, url: str, runs: int) -> dict[str, float]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        assert client.get(url).status_code == 200, url
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(url)
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    with CaptureQueriesContext(connection) as ctx:
        client.get(url)
    return {
        "p50": statistics.median(samples),
        "p95": statistics.quantiles(samples, n=20)[18],
        "max": max(samples),
        "queries": len(ctx.captured_queries),
    }


def pages(hospital: int) -> list[tuple[str, str, str]]:
    """(who, what, url) for every figures page and export the bench times."""
    from django.urls import reverse

    page = reverse("figures")
    return [
        ("region_admin", "all members, last 12 months", page),
        ("region_admin", "one hospital", f"{page}?institution={hospital}"),
        ("region_admin", "one quarter", f"{page}?date_from=2026-07-01&date_to=2026-09-30"),
        ("rh1_admin", "own hospital", page),
        ("tc01_admin", "own clinic", page),
        ("region_admin", "CSV consults/turnaround", reverse("figures_csv", args=["consults", "turnaround"])),
        (
            "region_admin",
            "CSV imaging/institution-month",
            reverse("figures_csv", args=["imaging", "institution-month"]),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    ensure_database(args.rebuild)
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client, override_settings

    from alliance.models import Institution
    from consults.figures import roll_up_consult_days
    from imaging.figures import roll_up_received_days
    from imaging.models import Study

    call_command("migrate", verbosity=0)
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        if not Study.objects.exists():
            build()
    for user in get_user_model().objects.filter(username__in=ADMINS):
        user.set_password(BENCH_PASSWORD)
        user.save(update_fields=["password"])
    # What the hourly beat job imaging.tasks.roll_up_received_days keeps up to date.
    roll_up_received_days()
    # And what consults.tasks.roll_up_consult_days keeps (the closed months of consults).
    started = time.perf_counter()
    written = roll_up_consult_days()
    print(f"consult roll-up: {written:,} rows in {time.perf_counter() - started:.1f} s")
    print(f"studies {Study.objects.count():,}; database {URL.rsplit('/', 1)[1]}")
    hospital = Institution.objects.get(name="Region Hospital 1").pk
    users = get_user_model().objects
    print("\n| who | page | p50 ms | p95 ms | max ms | queries |\n|---|---|---|---|---|---|")
    # The admins sign in without a second factor (no AllianceSettings row: the default policy):
    # the bench times the figures pages, not the sign-in gate.
    with override_settings(ALLOWED_HOSTS=["*"], OTP_REQUIRED_DEFAULT=False):
        for who, what, url in pages(hospital):
            client = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
            client.force_login(users.get(username=who))
            r = measure(client, url, args.runs)
            print(
                f"| {who} | {what} | {r['p50']:.0f} | {r['p95']:.0f} | {r['max']:.0f} | {r['queries']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
