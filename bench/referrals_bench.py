"""Referral list latency with 10,000 referrals in the database (issue 13).

Creates a throw-away database (test_<name of DATABASE_URL's database>), fills it with one
alliance, a tertiary hospital, five township clinics with a clinician each, 250 patients'
studies and 10,000 up referrals in every state over 90 days, then times the hospital desk's
incoming list and a clinic's outgoing list in-process (django.test.Client: the Django stack
and the database, no network) and counts queries per page.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python bench/referrals_bench.py [--runs 60]
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

REFERRALS = 10_000
CLINICS = 5
STUDIES = 250


def build() -> tuple[object, object]:
    from tests import factories
    from tests.referrals.bulk import bulk_referrals

    alliance = factories.AllianceFactory(name="Bench Alliance")
    hosp = factories.make_institution(alliance=alliance, level="tertiary", name="Bench Hospital", ae_title="BHOSP")
    clinics = [
        factories.make_institution(alliance=alliance, name=f"Bench Clinic {n}", ae_title=f"BCLIN{n}", parent=hosp)
        for n in range(CLINICS)
    ]
    desk = factories.make_doctor(institution=hosp, roles=["institution_admin"])
    referrers = [factories.make_doctor(institution=clinic) for clinic in clinics]
    studies = [factories.StudyFactory(institution=clinics[n % CLINICS]) for n in range(STUDIES)]
    by_clinic = {c.pk: [s for s in studies if s.institution_id == c.pk] for c in clinics}
    per = REFERRALS // CLINICS
    for referrer in referrers:
        bulk_referrals(referrers=[referrer], to_institution=hosp, studies=by_clinic[referrer.institution_id], count=per)
    return desk, referrers[0]


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
            desk, clinician = build()
            print(f"built {REFERRALS} referrals from {CLINICS} clinics in {time.perf_counter() - started:.1f} s")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        hosp, clinic, api = Client(), Client(), APIClient()
        hosp.force_login(desk.user)
        clinic.force_login(clinician.user)
        api.force_authenticate(desk.user)
        cases = [
            ("desk: incoming, waiting, page 1 (25 rows)", hosp, "/referrals/incoming/?tab=waiting"),
            ("desk: incoming, waiting, page 100 (25 rows)", hosp, "/referrals/incoming/?tab=waiting&page=100"),
            ("desk: incoming, appointments, page 1", hosp, "/referrals/incoming/?tab=appointments"),
            ("desk: incoming, closed, page 1", hosp, "/referrals/incoming/?tab=closed"),
            ("desk: incoming, patient filter", hosp, "/referrals/incoming/?tab=closed&patient=Patient"),
            ("clinic: outgoing, waiting, page 1", clinic, "/referrals/outgoing/?tab=waiting"),
            ("clinic: outgoing, closed, page 20", clinic, "/referrals/outgoing/?tab=closed&page=20"),
            ("API: incoming, waiting, limit 25", api, "/api/v1/referrals/?box=incoming&tab=waiting&limit=25"),
        ]
        print("\n| request | p50 ms | p95 ms | queries |\n|---|---|---|---|")
        for name, client, url in cases:
            r = measure(client, url, args.runs)
            print(f"| {name} | {r['p50']:.1f} | {r['p95']:.1f} | {r['queries']} |")
    finally:
        teardown_databases(old, verbosity=0)


if __name__ == "__main__":
    main()
