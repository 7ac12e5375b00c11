"""Every client failure: one line on stderr, its own exit code, no traceback (real processes)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mtlschat.client.errors import ExitCode

from .conftest import loopback_server

if TYPE_CHECKING:
    from conftest import TestPKI

Run = Callable[..., "subprocess.CompletedProcess[str]"]
PASSPHRASE_ENV = "MTLSCHAT_BUNDLE_PASSPHRASE"


@pytest.fixture(scope="module")
def room(pki: TestPKI, tmp_path_factory: pytest.TempPathFactory, spawn_server: Any) -> Any:
    """A PKI of this module's own (with mallory revoked) and a server process on it."""
    mine = type(pki)(tmp_path_factory.mktemp("client-errors"))
    mine.user("mallory")
    mine.revoke("mallory")
    server = spawn_server(mine.dir)
    return mine, server


def fails(result: subprocess.CompletedProcess[str], code: ExitCode, text: str) -> None:
    """Assert the exit code, and exactly one stderr line containing ``text``."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert text in lines[0], lines[0]
    assert result.stdout == ""


def test_exit_codes_are_distinct() -> None:
    # Iterating an IntEnum skips aliases (equal values merge into one member); __members__ keeps
    # every name, so two names sharing a code show up here (and @unique refuses the class).
    codes = [int(code) for code in ExitCode.__members__.values()]
    assert len(codes) == len(set(codes)) == len(ExitCode)


def test_bundle_missing(run_client: Run, tmp_path: Path) -> None:
    result = run_client("--cert", tmp_path / "nobody.pem", "127.0.0.1:1")
    fails(result, ExitCode.BUNDLE_MISSING, "nobody.pem does not exist")


def test_ca_file_missing(run_client: Run, room: Any, tmp_path: Path) -> None:
    pki, _ = room
    result = run_client("--cert", pki.user("alice"), "--ca", tmp_path / "no-ca.crt")
    fails(result, ExitCode.BUNDLE_MISSING, "no-ca.crt does not exist")


def test_bundle_unreadable(run_client: Run, tmp_path: Path) -> None:
    # A directory cannot be read as a file even by root (CI runs as root, so no chmod 000).
    fails(run_client("--cert", tmp_path, "127.0.0.1:1"), ExitCode.BUNDLE_UNREADABLE, "directory")


def test_bundle_with_key_but_no_certificate(run_client: Run, room: Any, tmp_path: Path) -> None:
    pki, _ = room
    text = pki.user("alice").read_text()
    key_only = tmp_path / "key-only.pem"
    key_only.write_text(text[: text.index("-----BEGIN CERTIFICATE")])
    fails(run_client("--cert", key_only), ExitCode.BUNDLE_UNREADABLE, "holds no certificate")


def test_bundle_without_key(run_client: Run, room: Any) -> None:
    pki, _ = room
    fails(run_client("--cert", pki.ca_cert), ExitCode.BUNDLE_NO_KEY, "holds no private key")


@pytest.fixture(scope="module")
def locked(room: Any) -> Path:
    """A bundle whose key is encrypted with the passphrase ``sesame``."""
    pki, _ = room
    out = pki.dir.parent / "locked.pem"
    pki.ca.issue_user("locked", out=out, passphrase=b"sesame")
    return out


def test_wrong_passphrase(run_client: Run, room: Any, locked: Path) -> None:
    _, server = room
    env = {PASSPHRASE_ENV: "open-barley"}
    result = run_client("--cert", locked, f"127.0.0.1:{server.port}", env=env)
    fails(result, ExitCode.BAD_PASSPHRASE, "wrong passphrase")


def test_missing_passphrase_without_terminal(run_client: Run, room: Any, locked: Path) -> None:
    _, server = room
    result = run_client("--cert", locked, f"127.0.0.1:{server.port}")
    fails(result, ExitCode.BAD_PASSPHRASE, PASSPHRASE_ENV)


def test_right_passphrase_gets_in(run_client: Run, room: Any, locked: Path) -> None:
    _, server = room
    env = {PASSPHRASE_ENV: "sesame"}
    result = run_client("--cert", locked, f"127.0.0.1:{server.port}", env=env)
    assert result.returncode == ExitCode.OK, result.stderr
    assert "* welcome locked." in result.stdout


def test_server_unreachable(run_client: Run, room: Any) -> None:
    pki, _ = room
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        result = run_client("--cert", pki.user("alice"), f"127.0.0.1:{port}")
    fails(result, ExitCode.UNREACHABLE, f"cannot reach 127.0.0.1:{port}: connection refused")


def test_server_not_signed_by_our_ca(run_client: Run, room: Any) -> None:
    pki, server = room
    # eve's bundle carries another CA: the real server's certificate does not chain to it.
    result = run_client("--cert", pki.other_ca_user("eve"), f"127.0.0.1:{server.port}")
    fails(result, ExitCode.SERVER_UNTRUSTED, "its certificate is from a different CA than yours")
    assert "self-signed certificate in certificate chain" not in result.stderr  # OpenSSL's words
    verbose = run_client("-v", "--cert", pki.other_ca_user("eve"), f"127.0.0.1:{server.port}")
    assert "openssl: self-signed certificate in certificate chain" in verbose.stderr


def test_server_hostname_mismatch(run_client: Run, room: Any) -> None:
    pki, server = room
    # "127.1" reaches 127.0.0.1 but is not a name on the server's certificate.
    result = run_client("--cert", pki.user("alice"), f"127.1:{server.port}")
    fails(result, ExitCode.HOSTNAME_MISMATCH, "not valid for 127.1")
    assert "it is valid for localhost, 127.0.0.1, " in result.stderr  # and ::1


def test_our_certificate_revoked(run_client: Run, room: Any) -> None:
    pki, server = room
    result = run_client("--cert", pki.user("mallory"), f"localhost:{server.port}")
    fails(result, ExitCode.CERT_REVOKED, "your certificate is revoked")


def test_our_certificate_expired(run_client: Run, room: Any) -> None:
    pki, server = room
    result = run_client("--cert", pki.expired_user("oldie"), f"localhost:{server.port}")
    fails(result, ExitCode.CERT_EXPIRED, "your certificate has expired")
    # Detected before connecting (port 1 would be "cannot reach"), with its date.
    until = (datetime.now(UTC) - timedelta(days=29)).strftime("%Y-%m-%d")
    early = run_client("--cert", pki.expired_user("oldie"), "127.0.0.1:1")
    fails(early, ExitCode.CERT_EXPIRED, f"was valid until {until}")


def test_a_certificate_about_to_expire_is_warned_about(run_client: Run, room: Any) -> None:
    pki, server = room
    soon = pki.ca.issue_user("shortlived", days=5, out=pki.dir / "shortlived.pem").path
    result = run_client("--cert", soon, f"localhost:{server.port}")
    assert result.returncode == ExitCode.OK, result.stderr
    assert "warning: your certificate expires in 4 days" in result.stderr
    assert "mtlschat ca renew shortlived" in result.stderr


def test_a_mistyped_bundle_name_suggests_the_close_match(run_client: Run, room: Any) -> None:
    pki, _ = room
    alice = pki.user("alice")
    result = run_client("--cert", alice.with_name("alcie.pem"), "127.0.0.1:1")
    fails(result, ExitCode.BUNDLE_MISSING, f"does not exist: did you mean {alice}?")


def test_our_certificate_from_unknown_ca(run_client: Run, room: Any) -> None:
    pki, server = room
    # Trust the right CA for the server (--ca), but present a certificate from another CA.
    bundle = pki.other_ca_user("eve")
    result = run_client("--cert", bundle, "--ca", pki.ca_cert, f"localhost:{server.port}")
    fails(result, ExitCode.CERT_UNKNOWN_CA, "signed by a CA this server does not trust")


def test_server_full(run_client: Run, room: Any, spawn_server: Any, spawn_client: Any) -> None:
    pki, _ = room
    full = spawn_server(pki.dir, "--max-connections", "1")
    addr = f"127.0.0.1:{full.port}"
    bob = spawn_client("--cert", pki.user("bob"), addr)
    bob.wait_out("* welcome bob")
    result = run_client("--cert", pki.user("alice"), addr)
    fails(result, ExitCode.REFUSED, f"{addr} closed the connection")
    bob.close_stdin()
    assert bob.wait_exit() == ExitCode.OK
    full.stop()


@pytest.fixture
def not_tls() -> Iterator[int]:
    """A TCP port that answers in plain text, like a web server or a typo'd port would."""
    with loopback_server(lambda conn: conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")) as port:
        yield port


def test_not_an_mtlschat_server(run_client: Run, room: Any, not_tls: int) -> None:
    pki, _ = room
    result = run_client("--cert", pki.user("alice"), f"127.0.0.1:{not_tls}")
    fails(
        result,
        ExitCode.PROTOCOL,
        f"127.0.0.1:{not_tls} does not speak TLS: is that the right port?",
    )
    verbose = run_client("--verbose", "--cert", pki.user("alice"), f"127.0.0.1:{not_tls}")
    assert "openssl: wrong version number" in verbose.stderr


def tls_server(bundle: Path, greeting: bytes) -> contextlib.AbstractContextManager[int]:
    """A bare TLS server on loopback presenting ``bundle``, sending ``greeting`` to whoever
    connects (not an mtlschat server: a certificate or a first line mtlschat would not send)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(bundle)

    def greet(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(greeting)
            tls.recv(1)  # until the client hangs up

    return loopback_server(greet)


def test_a_server_with_a_client_certificate_is_named_as_such(run_client: Run, room: Any) -> None:
    pki, _ = room
    with tls_server(pki.user("impostor"), b"") as port:
        result = run_client("--cert", pki.user("alice"), f"localhost:{port}")
    fails(result, ExitCode.SERVER_UNTRUSTED, "a certificate that is not a server certificate")


def test_a_first_line_over_one_mib_is_a_protocol_error(run_client: Run, room: Any) -> None:
    pki, _ = room
    with tls_server(pki.server_bundle, b"x" * (1 << 20) + b"yz\n") as port:
        result = run_client("--cert", pki.user("alice"), f"localhost:{port}")
    fails(result, ExitCode.PROTOCOL, "sent a first line over 1 MiB")


def test_bad_address(run_client: Run, room: Any) -> None:
    pki, _ = room
    fails(run_client("--cert", pki.user("alice"), "localhost:99999"), ExitCode.USAGE, "bad port")


def test_the_bundle_comes_from_mtlschat_cert_or_the_config_file(
    run_client: Run, room: Any, tmp_path: Path
) -> None:
    pki, server = room
    home = {"XDG_CONFIG_HOME": str(tmp_path)}
    result = run_client(f"localhost:{server.port}", env=home)
    fails(result, ExitCode.USAGE, "which certificate? give --cert FILE (or set MTLSCHAT_CERT")
    env = {**home, "MTLSCHAT_CERT": str(pki.user("alice"))}
    result = run_client(f"localhost:{server.port}", env=env)
    assert result.returncode == ExitCode.OK and "* welcome alice." in result.stdout
    config = tmp_path / "mtlschat" / "client.toml"
    config.parent.mkdir()
    config.write_text(f'cert = "{pki.user("bob")}"\nserver = "localhost:{server.port}"\n')
    result = run_client(env=home)
    assert result.returncode == ExitCode.OK and "* welcome bob." in result.stdout
    config.write_text("cert = 3\n")
    fails(run_client(env=home), ExitCode.USAGE, "cert must be a str")
