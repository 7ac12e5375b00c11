"""The one rule for putting a TLS or socket error in words (server log and client messages)."""

from __future__ import annotations

import errno
import ssl
from pathlib import Path

import pytest

from mtlschat.tlserror import tls_reason


def test_openssl_reason_in_lower_case_words(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-ca.pem"
    bad.write_bytes(b"garbage")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(ssl.SSLError) as caught:
        ctx.load_verify_locations(cafile=bad)
    assert tls_reason(caught.value) == "no certificate or crl found"


def test_socket_error_gives_its_errno_text() -> None:
    exc = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    assert tls_reason(exc) == "Connection reset by peer"


def test_ssl_error_without_reason_falls_back_to_its_text(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pem"
    bad.write_bytes(b"garbage")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(ssl.SSLError) as caught:
        ctx.load_cert_chain(bad)  # OpenSSL gives no short reason here ("PEM lib")
    assert "PEM lib" in tls_reason(caught.value)
