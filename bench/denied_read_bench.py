"""Does a refused read answer as fast as a missing one? (issue 22 item 2)

A 404 for another clinic's existing study is audited (alliance.audit.denied); a 404 for a
study that does not exist is not. The difference must not be visible to the caller: the
access function makes the same one existence lookup in both cases, and the audit row is
written by the response's closer, after the server has sent the body.

Creates a throw-away database (test_<DATABASE_URL's database>), one study at clinic A and a
doctor at clinic B, then calls Django's WSGI handler directly, alternating the two requests,
and times (a) until the handler returns the response (what a WSGI server then sends) and
(b) the response's close() (run by the server after sending: the audit write).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python bench/denied_read_bench.py [--runs 400]
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

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.test import Client, RequestFactory  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402


def environ(path: str, cookie: str) -> dict[str, object]:
    base = RequestFactory()._base_environ(PATH_INFO=path, REQUEST_METHOD="GET", HTTP_COOKIE=cookie)  # noqa: SLF001
    return base


def one(handler: WSGIHandler, env: dict[str, object]) -> tuple[float, float, int]:
    started = time.perf_counter()
    response = handler(dict(env), lambda status, headers, exc_info=None: None)
    answered = time.perf_counter()
    response.close()
    closed = time.perf_counter()
    return answered - started, closed - answered, response.status_code


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=400)
    args = parser.parse_args()
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    old = setup_databases(verbosity=0, interactive=False)
    try:
        from alliance.models import AuditEvent
        from tests import factories

        alliance = factories.AllianceFactory(name="Bench Alliance")
        clin_a = factories.make_institution(alliance=alliance, name="Bench A", ae_title="BENCHA")
        clin_b = factories.make_institution(alliance=alliance, name="Bench B", ae_title="BENCHB")
        study = factories.StudyFactory(institution=clin_a)
        stranger = factories.make_doctor(institution=clin_b, username="bench_stranger")
        client = Client()
        client.force_login(stranger.user)
        cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        forbidden = environ(f"/imaging/studies/{study.study_uid}/", cookie)
        missing = environ(f"/imaging/studies/{study.study_uid}9/", cookie)
        handler = WSGIHandler()
        times: dict[str, list[tuple[float, float]]] = {"forbidden": [], "missing": []}
        for n in range(args.runs + 20):
            for name, env in (("forbidden", forbidden), ("missing", missing)):
                answer, close, status = one(handler, env)
                assert status == 404, status
                if n >= 20:  # warm-up
                    times[name].append((answer, close))
        print(
            f"{args.runs} runs each, {connection_vendor()}; audit rows written: "
            f"{AuditEvent.objects.filter(outcome='denied').count()}\n"
        )
        print("| request | answer median ms | answer p90 ms | close (after sending) median ms |")
        print("|---|---|---|---|")
        for name, rows in times.items():
            answers = sorted(a * 1000 for a, _ in rows)
            closes = sorted(c * 1000 for _, c in rows)
            p90 = answers[int(len(answers) * 0.9)]
            print(f"| {name} | {statistics.median(answers):.2f} | {p90:.2f} | {statistics.median(closes):.3f} |")
    finally:
        teardown_databases(old, verbosity=0)


def connection_vendor() -> str:
    from django.db import connection

    return connection.vendor


if __name__ == "__main__":
    main()
