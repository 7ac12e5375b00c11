"""Every kind of unwelcome peer is refused at the handshake while a live chat goes on."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlschat.ca.keys import signature_hash

from .conftest import DEADLINE, ChatClient, assert_refused, client_context

if TYPE_CHECKING:
    from conftest import TestPKI

    from .conftest import RunningServer


def _refused_raw(port: int, payload: bytes) -> int:
    """Send non-TLS bytes; the server must close on us. Return our local port."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw:
        local_port = raw.getsockname()[1]
        raw.sendall(payload)
        try:
            while raw.recv(4096):  # at most a TLS alert, then EOF
                pass
        except ConnectionResetError:
            pass
    return local_port


@pytest.fixture
def live(chat_server: RunningServer) -> Callable[[], None]:
    """alice and bob are chatting; calling the result checks they still are."""
    alice = chat_server.join("alice")
    bob = chat_server.join("bob")
    alice.wait_for("join", name="bob")
    count = 0

    def still_chatting() -> None:
        nonlocal count
        count += 1
        alice.send(f"still here {count}")
        assert bob.wait_for("msg", **{"from": "alice"})["text"] == f"still here {count}"

    still_chatting()
    return still_chatting


CASES: dict[str, tuple[Callable[[TestPKI], ssl.SSLContext], str]] = {
    "no client cert": (lambda p: client_context(None, p.ca_cert), "did not return a certificate"),
    "other CA": (
        lambda p: client_context(p.other_ca_user("mallory"), p.ca_cert),
        "unable to get local issuer certificate|self-signed certificate in certificate chain",
    ),
    "expired": (
        lambda p: client_context(p.expired_user("oldtimer"), p.ca_cert),
        "certificate has expired",
    ),
    "server cert as client cert": (
        lambda p: client_context(p.server_bundle, p.ca_cert),
        "unsuitable certificate purpose|unsupported certificate purpose",
    ),
    "TLS 1.1": (
        lambda p: client_context(
            p.user("alice"), p.ca_cert, maximum_version=ssl.TLSVersion.TLSv1_1
        ),
        # OpenSSL 3.0 here still offers TLS 1.1 at @SECLEVEL=0; the server refuses it.
        "unsupported protocol",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_certificates_refused(
    case: str, chat_server: RunningServer, live: Callable[[], None], pki: TestPKI
) -> None:
    make_ctx, reason = CASES[case]
    local_port = assert_refused(chat_server.port, make_ctx(pki))
    chat_server.log.wait(rf"rejected handshake from 127\.0\.0\.1:{local_port}: .*({reason})")
    live()


@pytest.mark.parametrize(
    "payload",
    [b"hello there, is this the chat?\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(3000)],
    ids=["plaintext", "http", "random bytes"],
)
def test_garbage_refused(
    payload: bytes, chat_server: RunningServer, live: Callable[[], None]
) -> None:
    local_port = _refused_raw(chat_server.port, payload)
    chat_server.log.wait(rf"rejected handshake from 127\.0\.0\.1:{local_port}: ")
    live()


def test_certificate_name_outside_policy_gets_bad_name(
    tmp_path: Path, chat_server: RunningServer, pki: TestPKI
) -> None:
    """A CN our CA would never issue (signed by hand here) is refused in the protocol."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no spaces allowed")]))
        .issuer_name(pki.ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(pki.ca.key, signature_hash(pki.ca.key))
    )
    bundle = tmp_path / "badname.pem"
    bundle.write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        + cert.public_bytes(Encoding.PEM)
    )
    client = ChatClient(chat_server.port, client_context(bundle, pki.ca_cert))
    error, bye = client.wait_closed()
    assert (error["type"], error["code"], bye["type"]) == ("error", "bad_name", "bye")
    chat_server.log.wait(r"refused 'no spaces allowed' from 127\.0\.0\.1:\d+: bad name")
