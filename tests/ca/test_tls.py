"""Real TLS over loopback with the certificates the CA issues (no mocking of ssl or sockets)."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mtlschat.client.errors import ClientError, ExitCode
from mtlschat.client.tls import client_context
from mtlschat.net.tls import server_context

if TYPE_CHECKING:  # conftest is not importable at run time (--import-mode=importlib)
    from conftest import TestPKI

TIMEOUT = 20.0


def server_ctx(pki: TestPKI, *, crl: bool = True) -> ssl.SSLContext:
    """The server's real context (as ``mtlschat server`` builds it) for ``pki``."""
    return server_context(pki.server_bundle, pki.ca_cert, pki.crl if crl else None)


def client_ctx(pki: TestPKI, bundle: Path, passphrase: str | None = None) -> ssl.SSLContext:
    """The client's real context presenting ``bundle`` and trusting ``pki``'s CA."""
    return client_context(bundle, passphrase, pki.ca_cert)


@dataclass
class Outcome:
    server_peer_cn: str | None = None
    server_error: Exception | None = None
    client_got: bytes = b""
    client_error: Exception | None = None


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str = "localhost"
) -> Outcome:
    """Handshake once: the server side runs in a thread, the client here. Returns both sides."""
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    addr = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    outcome = Outcome()
    with socket.create_server((addr, 0), family=family) as listener:
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(TIMEOUT)
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    cert = tls.getpeercert() or {}
                    subject = dict(x[0] for x in cert.get("subject", ()))  # type: ignore[misc]
                    outcome.server_peer_cn = subject.get("commonName")
                    tls.sendall(b"welcome\n")
                    tls.recv(1)  # wait for the client to close
            except (ssl.SSLError, OSError) as e:
                outcome.server_error = e

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection((addr, port), timeout=TIMEOUT) as raw,
                client_ctx.wrap_socket(raw, server_hostname=host) as tls,
            ):
                # In TLS 1.3 the server checks our certificate after our side of the handshake
                # is done, so a refusal shows up on the first read.
                while not outcome.client_got.endswith(b"\n"):
                    chunk = tls.recv(64)
                    if not chunk:
                        break
                    outcome.client_got += chunk
        except (ssl.SSLError, OSError) as e:
            outcome.client_error = e
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    return outcome


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1"])
def test_handshake_with_issued_certs(pki: TestPKI, host: str) -> None:
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 loopback")
    result = handshake(server_ctx(pki), client_ctx(pki, pki.user("tls-alice")), host)
    assert result.server_error is None and result.client_error is None
    assert result.server_peer_cn == "tls-alice"
    assert result.client_got == b"welcome\n"


def test_revoked_client_refused_with_crl(fresh_pki: TestPKI) -> None:
    bundle = fresh_pki.user("tls-mallory")
    fresh_pki.revoke("tls-mallory")
    result = handshake(server_ctx(fresh_pki), client_ctx(fresh_pki, bundle))
    assert result.client_got == b""
    assert isinstance(result.server_error, ssl.SSLCertVerificationError)
    assert "revoked" in str(result.server_error)
    # Without the CRL the same certificate would still be accepted: the CRL is what stops it.
    ok = handshake(server_ctx(fresh_pki, crl=False), client_ctx(fresh_pki, bundle))
    assert ok.server_peer_cn == "tls-mallory"


def test_expired_and_foreign_clients_refused(pki: TestPKI) -> None:
    for bundle in (pki.expired_user("tls-old"), pki.other_ca_user("tls-alien")):
        result = handshake(server_ctx(pki), client_ctx(pki, bundle))
        assert result.client_got == b""
        assert isinstance(result.server_error, ssl.SSLCertVerificationError)


def test_encrypted_bundle_handshake(pki: TestPKI, tmp_path: Path) -> None:
    out = pki.ca.issue_user("tls-enc", out=tmp_path / "enc.pem", passphrase=b"hunter22").path
    with pytest.raises(ClientError) as wrong:
        client_ctx(pki, out, "wrong")
    assert wrong.value.code == ExitCode.BAD_PASSPHRASE
    result = handshake(server_ctx(pki), client_ctx(pki, out, "hunter22"))
    assert result.server_peer_cn == "tls-enc"


def test_server_cert_is_not_a_client_cert(pki: TestPKI) -> None:
    """EKU matters: the server's own certificate (serverAuth only) cannot join as a member."""
    result = handshake(server_ctx(pki), client_ctx(pki, pki.server_bundle))
    assert result.client_got == b""
    assert isinstance(result.server_error, ssl.SSLCertVerificationError)
