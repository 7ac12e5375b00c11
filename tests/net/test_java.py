"""A real Java 17 client (JSSE) against a real server process: TLS versions, suites, alerts."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mtlschat.ca.bundle import load_bundle
from mtlschat.ca.export import export_pkcs12, java_truststore

if TYPE_CHECKING:
    from conftest import ServerSpawner, TestPKI

PASSWORD = "changeit"
PROBE = Path(__file__).parent / "java" / "ChatProbe.java"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled probe's class directory."""
    out = tmp_path_factory.mktemp("java")
    subprocess.run(["javac", "-d", str(out), str(PROBE)], check=True, timeout=120)
    return out


def _stores(pki: TestPKI, name: str, bundle: Path, where: Path) -> tuple[Path, Path]:
    keystore, truststore = where / f"{name}.p12", where / "trust.p12"
    loaded = load_bundle(bundle, None)
    keystore.write_bytes(export_pkcs12(loaded, PASSWORD.encode()))
    truststore.write_bytes(java_truststore(loaded.chain[0], PASSWORD.encode()))
    return keystore, truststore


def _run(probe: Path, port: int, stores: tuple[Path, Path], *protocol: str) -> str:
    cmd = ["java", "-cp", str(probe), "ChatProbe", "localhost", str(port)]
    cmd += [str(stores[0]), str(stores[1]), PASSWORD, *protocol]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip() or done.stderr.strip()


@pytest.mark.parametrize("protocol", ["TLSv1.3", "TLSv1.2"])
def test_java_member_joins(
    probe: Path, pki: TestPKI, spawn_server: ServerSpawner, tmp_path: Path, protocol: str
) -> None:
    server = spawn_server(pki.dir)
    out = _run(probe, server.port, _stores(pki, "jack", pki.user("jack"), tmp_path), protocol)
    assert out.startswith(f"OK {protocol} "), out
    if protocol == "TLSv1.2":  # an AEAD suite (Mozilla intermediate), never CBC
        assert "_GCM_" in out or "CHACHA20" in out, out
    assert "* welcome jack." in out  # (no ALPN: text mode)


@pytest.mark.parametrize("protocol", ["TLSv1.3", "TLSv1.2"])
def test_java_sees_certificate_revoked(
    probe: Path, fresh_pki: TestPKI, spawn_server: ServerSpawner, tmp_path: Path, protocol: str
) -> None:
    """Issue 9.7: the server's alert must reach the client, not be destroyed by a reset
    (Java reported "Broken pipe" in 10 runs of 10 when the server closed with unread bytes)."""
    bundle = fresh_pki.user("mallory")
    fresh_pki.revoke("mallory")
    server = spawn_server(fresh_pki.dir)
    stores = _stores(fresh_pki, "mallory", bundle, tmp_path)
    for _ in range(2):
        out = _run(probe, server.port, stores, protocol)
        assert out == (
            "ERROR javax.net.ssl.SSLHandshakeException: Received fatal alert: certificate_revoked"
        ), out
