"""Reconnect and resume with real ``mtlschat client`` processes, a real server and its history."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mtlschat.client.errors import ExitCode

if TYPE_CHECKING:
    from conftest import TestPKI


def chat_lines(out: list[str], sender: str) -> list[str]:
    return [line for line in out if line.startswith(f"<{sender}> ")]


@pytest.mark.slow
def test_a_client_cut_off_for_10s_shows_every_missed_line_once_in_order(
    fresh_pki: TestPKI, spawn_server: Any, spawn_client: Any, tcp_relay: Any, tmp_path: Path
) -> None:
    server = spawn_server(fresh_pki.dir, "--history", str(tmp_path / "h.db"))
    relay = tcp_relay(server.port)
    bob = spawn_client("--cert", fresh_pki.user("bob"), f"localhost:{server.port}")
    bob.wait_out("* welcome bob")
    alice = spawn_client("--cert", fresh_pki.user("alice"), f"localhost:{relay.port}")
    alice.wait_out("* welcome alice")
    bob.send("before")
    alice.wait_out("<bob> before")

    relay.cut()
    alice.wait_err("reconnecting in")
    alice.send("typed while cut off")  # delivered once she is back
    start = time.monotonic()
    missed = 0
    while time.monotonic() - start < 10.0:  # others keep chatting for 10 s
        missed += 1
        bob.send(f"missed {missed}")
        bob.send(f"/me waves {missed}")
        time.sleep(0.5)
    relay.heal()
    alice.wait_err(f"reconnected to localhost:{relay.port}")
    bob.wait_out("<alice> typed while cut off")
    bob.send("after")
    alice.wait_out("<bob> after")
    expected = ["<bob> before"]
    for i in range(1, missed + 1):
        expected += [f"<bob> missed {i}"]
    expected.append("<bob> after")
    assert chat_lines(alice.out, "bob") == expected
    actions = [line for line in alice.out if line.startswith("* bob waves")]
    assert actions == [f"* bob waves {i}" for i in range(1, missed + 1)]
    assert "* recovered" in "\n".join(alice.out)
    for client in (alice, bob):
        client.close_stdin()
        assert client.wait_exit() == ExitCode.OK


def test_a_client_says_so_when_the_server_history_was_reset(
    fresh_pki: TestPKI, spawn_server: Any, spawn_client: Any, tmp_path: Path
) -> None:
    path = tmp_path / "h.db"
    server = spawn_server(fresh_pki.dir, "--history", str(path))
    alice = spawn_client("--cert", fresh_pki.user("alice"), f"127.0.0.1:{server.port}")
    alice.wait_out("* welcome alice")
    assert server.stop() == 0
    alice.wait_err("reconnecting in")
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    spawn_server(fresh_pki.dir, "--history", str(path), port=server.port, log=server.log_path)
    alice.wait_err("reconnected to")
    assert alice.wait_out("history was reset").startswith("! history was reset")
    alice.close_stdin()
    assert alice.wait_exit() == ExitCode.OK
