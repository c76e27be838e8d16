"""Worklist latency with 10,000 open consults and 50 specialists (issue 6).

Creates a throw-away database (test_<name of DATABASE_URL's database>), fills it with
one alliance, a pool of 50 specialists and 10,000 open consults, then times the
specialist's worklist page and the worklist API in-process (django.test.Client: the
Django stack and the database, no network) and counts queries per page.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python bench/worklist_bench.py [--runs 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")
# the alliance as the demo and the tests make it (no second factor asked): the pages, not the gate
os.environ.setdefault("OTP_REQUIRED_DEFAULT", "0")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_databases, teardown_databases  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

OPEN_CASES = 10_000
SPECIALISTS = 50


def build() -> tuple[object, object]:
    from tests import factories
    from tests.consults.bulk import bulk_open_consults

    alliance = factories.AllianceFactory(name="Bench Alliance")
    hosp = factories.make_institution(alliance=alliance, level="tertiary", name="Bench Hospital", ae_title="BHOSP")
    clinic = factories.make_institution(alliance=alliance, name="Bench Clinic", ae_title="BCLIN", parent=hosp)
    specialists = [factories.make_doctor(institution=hosp, roles=["specialist"]) for _ in range(SPECIALISTS)]
    pool = factories.make_pool(institution=hosp, members=specialists, name="Bench desk")
    clinician = factories.make_doctor(institution=clinic)
    studies = [factories.StudyFactory(institution=clinic) for _ in range(50)]
    bulk_open_consults(requester=clinician, pool=pool, studies=studies, count=OPEN_CASES, owners=specialists)
    return specialists[0], clinician


def measure(client: Client, url: str, runs: int) -> dict[str, float]:
    for _ in range(5):
        client.get(url)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    with CaptureQueriesContext(connection) as ctx:
        client.get(url)
    q = statistics.quantiles(samples, n=20)
    return {"p50": statistics.median(samples), "p95": q[18], "queries": len(ctx.captured_queries)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    old = setup_databases(verbosity=0, interactive=False)
    try:
        with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
            started = time.perf_counter()
            specialist, clinician = build()
            print(
                f"built {OPEN_CASES} open consults, {SPECIALISTS} specialists in {time.perf_counter() - started:.1f} s"
            )
        page, api, clinic = Client(), APIClient(), Client()
        page.force_login(specialist.user)
        api.force_authenticate(specialist.user)
        clinic.force_login(clinician.user)
        cases = [
            ("page: specialist, unclaimed, page 1 (25 rows)", page, "/consults/?tab=unclaimed"),
            ("page: specialist, unclaimed, page 300 (25 rows)", page, "/consults/?tab=unclaimed&page=300"),
            ("page: clinician, waiting, page 1 (25 rows)", clinic, "/consults/?tab=waiting"),
            ("API: unclaimed, limit 25", api, "/api/v1/consults/?tab=unclaimed&limit=25"),
            ("API: unclaimed, limit 200, offset 5000", api, "/api/v1/consults/?tab=unclaimed&limit=200&offset=5000"),
        ]
        print("\n| request | p50 ms | p95 ms | queries |\n|---|---|---|---|")
        for name, client, url in cases:
            r = measure(client, url, args.runs)
            print(f"| {name} | {r['p50']:.1f} | {r['p95']:.1f} | {r['queries']} |")
    finally:
        teardown_databases(old, verbosity=0)


if __name__ == "__main__":
    main()
