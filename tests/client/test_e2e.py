"""End to end: a real server process and real ``mtlschat client`` processes in pipe mode."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from mtlschat.client.errors import ExitCode

if TYPE_CHECKING:
    from conftest import TestPKI


def test_two_clients_chat_both_ways(pki: TestPKI, spawn_server: Any, spawn_client: Any) -> None:
    server = spawn_server(pki.dir)
    addr = f"localhost:{server.port}"

    bob = spawn_client("--cert", pki.user("bob"), addr)
    bob.wait_out("* welcome bob. online: bob")
    alice = spawn_client("--cert", pki.user("alice"), addr)
    alice.wait_out("* welcome alice. online: alice, bob")
    bob.wait_out("* alice joined")

    alice.send("hello bob")
    assert bob.wait_out("hello bob") == "<alice> hello bob"
    bob.send("hi alice, über-secret ✓")
    assert alice.wait_out("hi alice") == "<bob> hi alice, über-secret ✓"
    bob.send("/me waves")
    assert alice.wait_out("waves") == "* bob waves"
    alice.send("/msg bob psst")
    assert bob.wait_out("psst") == "[dm] <alice> -> bob: psst"
    assert alice.wait_out("psst") == "[dm] <alice> -> bob: psst"  # the server's echo

    # End of stdin: the last lines are delivered, then /quit, and the client exits 0.
    alice.send("last words")
    alice.close_stdin()
    assert alice.wait_exit() == ExitCode.OK
    assert "* bye: quit" in alice.out
    bob.wait_out("<alice> last words")
    bob.wait_out("* alice left")
    bob.close_stdin()
    assert bob.wait_exit() == ExitCode.OK
    # No chat line sent by a client comes back to it (shown locally by the UI, not in pipe mode).
    assert not any("hello bob" in line for line in alice.out)
    server.stop()


@pytest.mark.slow
def test_clients_reconnect_when_the_server_restarts(
    fresh_pki: TestPKI, spawn_server: Any, spawn_client: Any
) -> None:
    server = spawn_server(fresh_pki.dir)
    addr = f"127.0.0.1:{server.port}"
    alice = spawn_client("--cert", fresh_pki.user("alice"), addr)
    alice.wait_out("* welcome alice")
    bob = spawn_client("--cert", fresh_pki.user("bob"), addr)
    bob.wait_out("* welcome bob")

    assert server.stop() == 0  # graceful: everyone gets a bye
    alice.wait_out("* bye: ")
    alice.wait_err("reconnecting in")
    bob.wait_err("reconnecting in")

    again = spawn_server(fresh_pki.dir, port=server.port, log=server.log_path)
    alice.wait_err(f"reconnected to {addr}")
    bob.wait_err(f"reconnected to {addr}")
    alice.send("back again")
    assert bob.wait_out("back again") == "<alice> back again"

    for client in (alice, bob):
        client.close_stdin()
        assert client.wait_exit() == ExitCode.OK
    again.stop()


def test_lines_typed_before_the_welcome_are_delivered(
    pki: TestPKI, spawn_server: Any, spawn_client: Any, run_client: Any
) -> None:
    server = spawn_server(pki.dir)
    addr = f"127.0.0.1:{server.port}"
    bob = spawn_client("--cert", pki.user("bob"), addr)
    bob.wait_out("* welcome bob")
    # All of stdin is there before the connection: nothing is lost, order is kept.
    result = run_client("--cert", pki.user("alice"), addr, input="one\ntwo\n\nthree\n")
    assert result.returncode == ExitCode.OK, result.stderr
    bob.wait_out("<alice> three")
    assert [line for line in bob.out if line.startswith("<alice>")] == [
        "<alice> one",
        "<alice> two",
        "<alice> three",
    ]
    bob.close_stdin()
    assert bob.wait_exit() == ExitCode.OK


def test_client_reconnects_after_the_network_drops(
    pki: TestPKI, spawn_server: Any, spawn_client: Any, tcp_relay: Any
) -> None:
    server = spawn_server(pki.dir)
    proxy = tcp_relay(server.port)
    bob = spawn_client("--cert", pki.user("bob"), f"localhost:{server.port}")
    bob.wait_out("* welcome bob")
    alice = spawn_client("--cert", pki.user("alice"), f"localhost:{proxy.port}")
    alice.wait_out("* welcome alice")
    bob.wait_out("* alice joined")

    proxy.reset()
    alice.wait_err("connection closed without a goodbye; reconnecting in")
    alice.wait_err(f"reconnected to localhost:{proxy.port}")
    alice.send("still here")
    assert bob.wait_out("still here") == "<alice> still here"
    for client in (alice, bob):
        client.close_stdin()
        assert client.wait_exit() == ExitCode.OK
