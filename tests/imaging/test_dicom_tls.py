"""DICOM over TLS (PS3.15 B.1) on the real server process, driven by dcmtk's `echoscu +tls`,
`storescu +tls` and `findscu -W +tls`, with a CA, server and client certificates made here by
the openssl command; a device with a pinned client certificate associates only with it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from alliance import audit, services
from alliance.models import AuditEvent
from imaging.models import Instance
from tests.imaging import dicomgen
from tests.imaging import test_dicom_server as dicom_server
from tests.imaging.test_dicom_server import ROOT, database_url, dcmtk, k
from tests.processes import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed"),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (.ci/install-system-packages)"),
]
accelerate, data_dir, server, world = (
    dicom_server.accelerate,
    dicom_server.data_dir,
    dicom_server.server,
    dicom_server.world,
)


def openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=True, timeout=60)
    return done.stdout


def signed(
    folder: Path, name: str, subject: str, ca: tuple[Path, Path] | None, extensions: str = ""
) -> SimpleNamespace:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    if ca is None:  # self-signed
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            subject,
        )
    else:
        request = folder / f"{name}.csr"
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request), "-subj", subject)
        args = [
            "x509",
            "-req",
            "-in",
            str(request),
            "-CA",
            str(ca[1]),
            "-CAkey",
            str(ca[0]),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "2",
        ]
        if extensions:
            (folder / f"{name}.ext").write_text(extensions)
            args += ["-extfile", str(folder / f"{name}.ext")]
        openssl(*args)
    fingerprint = openssl("x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256").strip().split("=", 1)[1]
    return SimpleNamespace(key=key, cert=cert, fingerprint=fingerprint)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> SimpleNamespace:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("pki")
    ca = signed(folder, "ca", "/CN=Test Alliance CA", None)
    return SimpleNamespace(
        ca=ca,
        server=signed(folder, "server", "/CN=localhost", (ca.key, ca.cert), "subjectAltName=IP:127.0.0.1\n"),
        clinic=signed(folder, "clinic", "/CN=CT_A", (ca.key, ca.cert)),
        other=signed(folder, "other", "/CN=CT_A", (ca.key, ca.cert)),  # issued by the CA, pinned nowhere
        rogue=signed(folder, "rogue", "/CN=CT_A", None),  # not issued by the CA
    )


@pytest.fixture
def tls_port() -> int:
    return free_port()


@pytest.fixture
def server_env(pki, tls_port) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "DICOM_TLS_PORT": str(tls_port),
        "DICOM_TLS_CERT": str(pki.server.cert),
        "DICOM_TLS_KEY": str(pki.server.key),
        "DICOM_TLS_CA": str(pki.ca.cert),
    }


def tls(client: SimpleNamespace | None, pki: SimpleNamespace) -> list[str]:
    """dcmtk's TLS options: a client certificate, or anonymous TLS; the server checked against the CA."""
    mine = ["+tls", str(client.key), str(client.cert)] if client is not None else ["+tla"]
    return [*mine, "+cf", str(pki.ca.cert)]


def wait_for_tls(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def test_a_pinned_clinic_stores_over_tls_and_nothing_else_passes_for_it(server, world, pki, tls_port, tmp_path) -> None:  # type: ignore[no-untyped-def]
    wait_for_tls(tls_port)
    services.device_update(device=world.ct_a, tls_client_sha256=pki.clinic.fingerprint, by=audit.SYSTEM)
    services.device_update(device=world.ct_a, host="192.0.2.99", by=audit.SYSTEM)  # behind NAT: its address varies
    port = str(tls_port)
    dcmtk("echoscu", "-aet", "CT_A", "-aec", "CLINA", *tls(pki.clinic, pki), "127.0.0.1", port)
    folder = tmp_path / "ct"
    folder.mkdir()
    datasets = dicomgen.make_ct_series(3, 64, 64, patient_id="P-TLS", accession_number="TLS-1")
    dicomgen.write_series(datasets, folder)
    dcmtk(
        "storescu", "-aet", "CT_A", "-aec", "CLINA", *tls(pki.clinic, pki), "+sd", "+r", "127.0.0.1", port, str(folder)
    )
    assert Instance.objects.filter(series__study__study_uid=datasets[0].StudyInstanceUID).count() == 3
    dcmtk("findscu", "-W", "-aet", "CT_A", "-aec", "CLINA", *tls(pki.clinic, pki), *k("PatientName"), "127.0.0.1", port)

    refusals = {
        "plain TCP": dcmtk("echoscu", "-aet", "CT_A", "-aec", "CLINA", "127.0.0.1", str(server), check=False),
        "anonymous TLS": dcmtk(
            "echoscu", "-aet", "CT_A", "-aec", "CLINA", *tls(None, pki), "127.0.0.1", port, check=False
        ),
        "another certificate of the CA": dcmtk(
            "echoscu", "-aet", "CT_A", "-aec", "CLINA", *tls(pki.other, pki), "127.0.0.1", port, check=False
        ),
        "a certificate the CA did not issue": dcmtk(
            "echoscu", "-aet", "CT_A", "-aec", "CLINA", *tls(pki.rogue, pki), "127.0.0.1", port, check=False
        ),
    }
    for what, done in refusals.items():
        assert done.returncode != 0, what
    denied = AuditEvent.objects.filter(action="dicom.associate", actor_name="CT_A", outcome="denied").count()
    assert denied == 3  # the rogue certificate never got past the handshake


def test_an_unpinned_device_uses_tls_without_a_certificate_from_its_host(server, world, pki, tls_port) -> None:  # type: ignore[no-untyped-def]
    wait_for_tls(tls_port)
    dcmtk("echoscu", "-aet", "WS_A", "-aec", "CLINA", *tls(None, pki), "127.0.0.1", str(tls_port))
    dcmtk("echoscu", "-aet", "WS_A", "-aec", "CLINA", "127.0.0.1", str(server))  # and plain DICOM still
    plain_on_tls = dcmtk("echoscu", "-aet", "WS_A", "-aec", "CLINA", "127.0.0.1", str(tls_port), check=False)
    assert plain_on_tls.returncode != 0
    services.device_update(device=world.ws_a, host="192.0.2.7", by=audit.SYSTEM)  # another host, no pin
    moved = dcmtk("echoscu", "-aet", "WS_A", "-aec", "CLINA", *tls(None, pki), "127.0.0.1", str(tls_port), check=False)
    assert moved.returncode != 0


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("DICOM_TLS_CERT", "/nonexistent/server.crt", "DICOM_TLS_CERT"),
        ("DICOM_TLS_KEY", "not-a-key", "DICOM TLS"),  # a file, but no key
    ],
)
def test_a_bad_certificate_setting_stops_the_server_with_its_name(pki, tmp_path, setting, value, said) -> None:  # type: ignore[no-untyped-def]
    if value == "not-a-key":
        value = str(tmp_path / "garbage.key")
        Path(value).write_text("not a key\n")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(tmp_path),
        "DICOM_PORT": str(free_port()),
        "DICOM_TLS_PORT": str(free_port()),
        "DICOM_TLS_CERT": str(pki.server.cert),
        "DICOM_TLS_KEY": str(pki.server.key),
        setting: value,
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "dicom_server"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert said in done.stdout + done.stderr
