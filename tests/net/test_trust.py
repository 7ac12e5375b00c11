"""The server's own PKI files, against real server processes: startup refusals, reloads that fail
closed (SIGHUP and the file watch), an expired CRL under a moved clock, expiry warnings.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509

from .conftest import ChatClient, assert_refused, client_context, join_as

if TYPE_CHECKING:
    from conftest import CLIRunner, ServerProcess, TestPKI

    from .conftest import ServerFactory

needs_faketime = pytest.mark.skipif(
    shutil.which("faketime") is None, reason="needs faketime (Debian package faketime)"
)


def _start(mtlschat_cli: CLIRunner, pki: TestPKI, *flags: str | Path) -> str:
    r = mtlschat_cli("server", "--pki", pki.dir, "--host", "127.0.0.1", "--port", "0", *flags)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr


# -- refusing to start ----------------------------------------------------------------------


def test_a_client_certificate_is_not_a_server_certificate(
    pki: TestPKI, mtlschat_cli: CLIRunner
) -> None:
    err = _start(mtlschat_cli, pki, "--cert", pki.user("alice"))
    assert "('alice') is not a server certificate (no serverAuth)" in err
    assert "mtlschat ca issue --server" in err


def test_a_server_certificate_from_a_replaced_ca_is_refused(
    fresh_pki: TestPKI, pki: TestPKI, mtlschat_cli: CLIRunner
) -> None:
    # fresh_pki's own server.pem, but the CA of another PKI (as after `ca init --force`).
    err = _start(mtlschat_cli, fresh_pki, "--ca", pki.ca_cert)
    assert f"is not signed by the CA in {pki.ca_cert}" in err
    assert "mtlschat ca issue --server" in err


def test_a_key_that_does_not_match_the_certificate_is_refused(
    tmp_path: Path, pki: TestPKI, fresh_pki: TestPKI, mtlschat_cli: CLIRunner
) -> None:
    mine, other = pki.server_bundle.read_text(), fresh_pki.server_bundle.read_text()
    key_end = mine.index("-----END PRIVATE KEY-----") + len("-----END PRIVATE KEY-----\n")
    other_key_end = other.index("-----END PRIVATE KEY-----") + len("-----END PRIVATE KEY-----\n")
    mixed = tmp_path / "mixed.pem"
    mixed.write_text(other[:other_key_end] + mine[key_end:])
    err = _start(mtlschat_cli, pki, "--cert", mixed)
    assert "does not match any certificate in it" in err


def test_a_lost_crl_is_refused_at_startup(fresh_pki: TestPKI, mtlschat_cli: CLIRunner) -> None:
    # Revoke bob, then lose crl.pem: a restart must not let him back in (fail closed).
    fresh_pki.user("bob")
    fresh_pki.revoke("bob")
    fresh_pki.crl.unlink()
    err = _start(mtlschat_cli, fresh_pki)
    assert f"CRL not found: {fresh_pki.crl}" in err
    assert "mtlschat ca crl" in err


@needs_faketime
def test_an_expired_server_certificate_is_refused(pki: TestPKI) -> None:
    # Four hundred days on, the server's certificate (397 days at most) has expired.
    faked = ["faketime", "-f", "+400d", sys.executable, "-m", "mtlschat", "server"]
    out = subprocess.run(
        [*faked, "--pki", str(pki.dir), "--host", "127.0.0.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("MTLSCHAT_")},
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert f"the server certificate {pki.server_bundle} expired on" in out.stderr
    assert out.stderr.count("\n") == 1


# -- reloads that fail closed ---------------------------------------------------------------


def test_reload_refuses_a_client_certificate_as_the_server_certificate(
    fresh_pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server(fresh_pki.dir)
    alice = join_as(server.port, fresh_pki, "alice")
    shutil.copy(fresh_pki.user("mallory"), fresh_pki.server_bundle)
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r"ERROR reload failed, keeping the previous .*is not a server certificate")
    bob = join_as(server.port, fresh_pki, "bob")  # new handshakes still get the good certificate
    bob.send("hello")
    assert alice.wait_for("msg")["text"] == "hello"


def _revoke_bob_and_reload(
    pki: TestPKI, server: ServerProcess, mtlschat_cli: CLIRunner
) -> ChatClient:
    bob = join_as(server.port, pki, "bob")
    assert mtlschat_cli("ca", "revoke", "bob", "--pki", pki.dir).returncode == 0
    server.proc.send_signal(signal.SIGHUP)
    assert bob.wait_closed()[-1] == {"type": "bye", "reason": "certificate revoked"}
    return bob


def _bob_stays_out(pki: TestPKI, server: ServerProcess) -> None:
    assert_refused(server.port, client_context(pki.user("bob"), pki.ca_cert))
    join_as(server.port, pki, "carol").close()


def test_a_missing_crl_at_reload_keeps_the_last_good_one(
    fresh_pki: TestPKI, spawn_server: Callable[..., ServerProcess], mtlschat_cli: CLIRunner
) -> None:
    server = spawn_server(fresh_pki.dir)
    _revoke_bob_and_reload(fresh_pki, server, mtlschat_cli)
    fresh_pki.crl.unlink()
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(rf"ERROR reload failed, .*the CRL {fresh_pki.crl} has disappeared")
    _bob_stays_out(fresh_pki, server)


def test_an_older_crl_at_reload_keeps_the_last_good_one(
    fresh_pki: TestPKI, spawn_server: Callable[..., ServerProcess], mtlschat_cli: CLIRunner
) -> None:
    before = fresh_pki.crl.read_bytes()  # lists nobody
    server = spawn_server(fresh_pki.dir)
    _revoke_bob_and_reload(fresh_pki, server, mtlschat_cli)
    fresh_pki.crl.write_bytes(before)  # an old copy put back
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r"ERROR reload failed, .* is older than the one in force")
    _bob_stays_out(fresh_pki, server)


def test_a_foreign_crl_at_reload_keeps_the_last_good_one(
    fresh_pki: TestPKI,
    pki: TestPKI,
    spawn_server: Callable[..., ServerProcess],
    mtlschat_cli: CLIRunner,
) -> None:
    server = spawn_server(fresh_pki.dir)
    _revoke_bob_and_reload(fresh_pki, server, mtlschat_cli)
    shutil.copy(pki.crl, fresh_pki.crl)
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r"ERROR reload failed, .* is not signed by the CA the server trusts")
    _bob_stays_out(fresh_pki, server)


# -- revocation in one step -----------------------------------------------------------------


def test_a_rewritten_crl_is_picked_up_without_a_signal(
    fresh_pki: TestPKI, spawn_server: Callable[..., ServerProcess], mtlschat_cli: CLIRunner
) -> None:
    server = spawn_server(fresh_pki.dir)
    alice = join_as(server.port, fresh_pki, "alice")
    bob = join_as(server.port, fresh_pki, "bob")
    assert mtlschat_cli("ca", "revoke", "bob", "--pki", fresh_pki.dir).returncode == 0
    # No SIGHUP: the server stat()s its files once a second.
    assert bob.wait_closed()[-1] == {"type": "bye", "reason": "certificate revoked"}
    assert alice.wait_for("leave", name="bob")["reason"] == "certificate revoked"
    server.wait_log(r"PKI files changed on disk: reloading")
    _bob_stays_out(fresh_pki, server)


def test_a_new_server_certificate_is_picked_up_without_a_signal(
    fresh_pki: TestPKI, spawn_server: Callable[..., ServerProcess], mtlschat_cli: CLIRunner
) -> None:
    server = spawn_server(fresh_pki.dir)
    old_serial = _served_serial(server.port, fresh_pki)
    r = mtlschat_cli("ca", "issue", "--server", "localhost", "--pki", fresh_pki.dir, "--force")
    assert r.returncode == 0, r.stderr
    server.wait_log(r"reloaded server certificate and CRL")
    assert _served_serial(server.port, fresh_pki) != old_serial


def _served_serial(port: int, pki: TestPKI) -> int:
    client = ChatClient(port, client_context(pki.user("alice"), pki.ca_cert))
    try:
        der = client.sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        client.close()


# -- an expired CRL is the operator's problem, not the members' ------------------------------


def _short_crl(pki: TestPKI, *, revoked_bob: bool) -> None:
    """Rewrite the CRL valid for one day from now (optionally revoking bob first)."""
    if revoked_bob:
        pki.user("bob")
        pki.revoke("bob")
    pki.ca.write_crl(days=1)


@needs_faketime
def test_an_expired_crl_lets_members_in_and_keeps_revoked_ones_out(
    fresh_pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    _short_crl(fresh_pki, revoked_bob=True)
    # The server's clock is two days ahead: its CRL's nextUpdate has passed.
    server = spawn_server(fresh_pki.dir, prefix=("faketime", "-f", "+2d"))
    server.wait_log(rf"ERROR the CRL {fresh_pki.crl} expired on .*run `mtlschat ca crl`")
    alice = ChatClient(server.port, client_context(fresh_pki.user("alice"), fresh_pki.ca_cert))
    alice.wait_for("welcome", name="alice")
    notice = alice.wait_for("info")
    assert "this server's certificate revocation list expired" in notice["text"]
    assert "tell the server's operator" in notice["text"]
    # Whoever the last good CRL revokes stays out, checked by the server itself.
    port = assert_refused(server.port, client_context(fresh_pki.user("bob"), fresh_pki.ca_cert))
    server.wait_log(rf"rejected handshake from 127\.0\.0\.1:{port}: certificate revoked")


def test_expiry_warnings_at_startup(
    fresh_pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    fresh_pki.ca.issue_server(["localhost"], days=10, force=True)
    _short_crl(fresh_pki, revoked_bob=False)
    server = spawn_server(fresh_pki.dir)
    server.wait_log(
        rf"WARNING the server certificate {fresh_pki.server_bundle} expires on .*in 10 days"
    )
    server.wait_log(rf"WARNING the CRL {fresh_pki.crl} \(nextUpdate\) expires on .*in 1 days")
    assert "the CA certificate" not in server.log()  # ten years away


def test_expiry_warnings_repeat_daily(fresh_pki: TestPKI, start_server: ServerFactory) -> None:
    fresh_pki.ca.issue_server(["localhost"], days=10, force=True)
    offset = [0.0]
    server = start_server(fresh_pki, clock=lambda: time.time() + offset[0])
    server.log.wait(r"the server certificate .* expires on .*in 10 days")
    offset[0] = 1.1 * 86400  # a day later, same process
    server.log.wait(r"the server certificate .* expires on .*in 9 days")


def test_members_are_not_told_about_a_current_crl(
    pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server(pki.dir)
    alice = join_as(server.port, pki, "alice")
    alice.send("/who")
    alice.wait_for("who")
    assert not any(m.get("type") == "info" for m in alice.seen)
