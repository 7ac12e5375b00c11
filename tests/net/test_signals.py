"""A real ``mtlschat server`` process: SIGHUP reload + revocation, SIGTERM shutdown."""

from __future__ import annotations

import resource
import signal
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from .conftest import BioClient, Closed, assert_refused, client_context, join_as

if TYPE_CHECKING:
    from conftest import CLIRunner, ServerProcess, TestPKI

    from .conftest import ServerFactory


def test_sighup_after_revoke_disconnects_only_bob(
    fresh_pki: TestPKI,
    spawn_server: Callable[..., ServerProcess],
    mtlschat_cli: CLIRunner,
) -> None:
    server = spawn_server(fresh_pki.dir)
    alice = join_as(server.port, fresh_pki, "alice")
    bob = join_as(server.port, fresh_pki, "bob")
    carol = join_as(server.port, fresh_pki, "carol")
    alice.wait_for("join", name="carol")

    revoke = mtlschat_cli("ca", "revoke", "bob", "--pki", fresh_pki.dir)
    assert revoke.returncode == 0, revoke.stderr
    server.proc.send_signal(signal.SIGHUP)

    assert bob.wait_closed()[-1] == {"type": "bye", "reason": "certificate revoked"}
    for c in (alice, carol):
        leave = c.wait_for("leave", name="bob")
        assert leave["reason"] == "certificate revoked"
    server.wait_log(r"reloaded server certificate and CRL \(1 revoked serials, 1 sessions kicked\)")

    alice.send("just us now")
    assert carol.wait_for("msg")["text"] == "just us now"
    port = assert_refused(server.port, client_context(fresh_pki.user("bob"), fresh_pki.ca_cert))
    server.wait_log(rf"rejected handshake from 127\.0\.0\.1:{port}: certificate revoked")
    # Alice and carol were never dropped.
    assert "disconnect alice" not in server.log() and "disconnect carol" not in server.log()
    assert server.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_stop_signal_says_bye_and_exits_zero(
    signum: signal.Signals, pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server(pki.dir)
    alice = join_as(server.port, pki, "alice", suppress_ragged_eofs=False)
    server.proc.send_signal(signum)
    # bye, then a clean TLS close (close_notify): a ragged EOF would raise SSLEOFError.
    assert alice.wait_for("bye")["reason"] == "server shutting down"
    try:
        alice.read_line()
    except Closed as exc:
        assert str(exc) == "EOF"
    assert server.proc.wait(15) == 0
    assert f"shutting down ({signum.name})" in server.log() and "stopped" in server.log()
    assert "Traceback" not in server.log()


def test_reload_with_broken_crl_keeps_serving(
    fresh_pki: TestPKI, start_server: ServerFactory
) -> None:
    server = start_server(fresh_pki)
    alice = server.join("alice")
    bob = server.join("bob")
    fresh_pki.crl.write_text("-----BEGIN X509 CRL-----\nnot really\n-----END X509 CRL-----\n")
    server.server.request(signal.SIGHUP)
    server.log.wait(r"reload failed, keeping the previous certificate and CRL: ")
    alice.send("still fine")
    assert bob.wait_for("msg")["text"] == "still fine"
    server.join("carol")  # new handshakes use the previous, good context


def test_foreign_crl_refused_at_startup(
    fresh_pki: TestPKI, pki: TestPKI, mtlschat_cli: CLIRunner
) -> None:
    r = mtlschat_cli("server", "--pki", fresh_pki.dir, "--crl", pki.crl, "--port", "0")
    assert r.returncode == 1
    assert r.stderr.startswith("mtlschat: error: the CRL ")
    assert "is not signed by the CA the server trusts" in r.stderr
    assert r.stderr.count("\n") == 1


def test_handshake_straddling_a_reload_is_checked_against_the_new_crl(
    fresh_pki: TestPKI, start_server: ServerFactory
) -> None:
    fresh_pki.user("mallory")
    server = start_server(fresh_pki)
    with BioClient(server.port, server.context("mallory")) as mallory:
        mallory.raw.sendall(mallory.start())  # handshake begun with the old context...
        mallory.receive()  # (the server's first flight: it has accepted and answered)
        fresh_pki.revoke("mallory")
        server.server.request(signal.SIGHUP)
        server.log.wait(r"reloaded server certificate and CRL \(1 revoked")
        mallory.finish()  # ...and completed after the reload (TLS 1.3: client finishes first)
        with pytest.raises((ssl.SSLError, ConnectionError, Closed)):
            mallory.read_line()
    server.log.wait(r"rejected handshake from .*: certificate revoked")


def test_stop_while_accepts_are_paused_still_says_bye(
    pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server(pki.dir)
    alice = join_as(server.port, pki, "alice")
    # No descriptor left for the server: a pending connection makes accept() fail (EMFILE),
    # and the listener is unregistered for a while, over and over while the peer waits.
    resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (3, 3))
    with socket.create_connection(("127.0.0.1", server.port)):
        server.wait_log(r"accept failed: .*; pausing accepts")
        server.proc.send_signal(signal.SIGTERM)
        assert alice.wait_for("bye")["reason"] == "server shutting down"
        assert server.proc.wait(15) == 0
    assert "stopped" in server.log() and "Traceback" not in server.log()
