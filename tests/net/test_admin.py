"""``mtlschat admin`` over the control socket: the real CLI against a real server process, with
real members; and the control socket's own safety (mode, stale and live sockets, garbage, stalls)
against an in-process server.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mtlschat.net import control
from mtlschat.net.config import ServerConfig
from mtlschat.net.server import ChatServer, StartupError

from .conftest import DEADLINE, ChatClient, Closed, ServerFactory, client_context

if TYPE_CHECKING:
    from conftest import CLIRunner, ServerProcess, TestPKI


def _join(port: int, pki: TestPKI, name: str) -> ChatClient:
    client = ChatClient(port, client_context(pki.user(name), pki.ca_cert))
    client.wait_for("welcome", name=name)
    return client


def test_admin_cli_moderates_a_live_room(
    tmp_path: Path,
    fresh_pki: TestPKI,
    spawn_server: Callable[..., ServerProcess],
    mtlschat_cli: CLIRunner,
) -> None:
    sock = tmp_path / "admin.sock"
    config = tmp_path / "server.toml"
    config.write_text("operators = []\n")
    server = spawn_server(fresh_pki.dir, "--config", str(config), "--control", str(sock))
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600

    def admin(*words: str) -> tuple[int, str, str]:
        result = mtlschat_cli("admin", *words, env={"MTLSCHAT_CONTROL": str(sock)})
        return result.returncode, result.stdout, result.stderr

    alice = _join(server.port, fresh_pki, "alice")
    bob = _join(server.port, fresh_pki, "bob")
    alice.send("hello")
    bob.wait_for("msg", text="hello")

    code, out, _ = admin("who", "--json")
    assert code == 0
    sessions = json.loads(out)["sessions"]
    assert [s["name"] for s in sessions] == ["alice", "bob"]
    assert all(s["address"].startswith("127.0.0.1:") and s["mode"] == "json" for s in sessions)
    code, out, _ = admin("stats", "--json")
    stats = json.loads(out)["stats"]
    assert code == 0 and stats["members_online"] == 2 and stats["lines_in_total"] == 1
    assert stats["handshakes_total{reason=,result=ok}"] == 2

    assert admin("kick", "bob", "flooding")[0] == 0
    assert bob.wait_closed()[-1] == {"type": "bye", "reason": "kicked by admin(shell): flooding"}
    assert alice.wait_for("info")["text"] == "admin(shell) kicked bob (flooding)"
    server.wait_log(r"audit: operator=admin\(shell\) action=kicked target=bob detail=flooding")

    assert admin("ban", "bob", "1h", "spam")[0] == 0
    refused = ChatClient(server.port, client_context(fresh_pki.user("bob"), fresh_pki.ca_cert))
    with pytest.raises(Closed):
        refused.wait_for("welcome")
    assert [m["type"] for m in refused.seen] == ["error", "bye"]
    assert refused.seen[0]["code"] == "banned"
    assert "by admin(shell)" in str(refused.seen[0]["text"])
    code, out, _ = admin("bans")
    assert code == 0 and out.startswith("bob is banned from this room by admin(shell), until ")
    assert admin("unban", "bob")[0] == 0
    bob = _join(server.port, fresh_pki, "bob")

    # Refusals and bad command lines: one line on stderr, an exit code, nothing else changes.
    assert admin("unban", "bob") == (1, "", "mtlschat: error: bob is not banned\n")
    assert admin("kick") == (1, "", "mtlschat: error: usage: /kick NAME [reason]\n")
    code, out, err = admin("frobnicate")
    assert (code, out) == (2, "") and err.startswith("mtlschat: error: unknown command")
    assert err.count("\n") == 1

    # reload = SIGHUP: the operators list is re-read from the config file.
    alice.send("/bans")
    assert alice.wait_for("error")["code"] == "not_operator"
    config.write_text('operators = ["alice"]\n')
    assert admin("reload")[0] == 0
    server.wait_log(r"operators: alice")
    alice.send("/bans")
    assert alice.wait_for("info")["text"] == "no bans"
    bob.send("still here")
    alice.wait_for("msg", text="still here")  # the members were never disturbed

    assert server.stop() == 0
    assert not sock.exists()  # removed on the way out
    code, _, err = admin("who")
    assert code == 3
    assert err == (
        f"mtlschat: error: no server is listening on {sock} (is it running? is --control set?)\n"
    )


def _request(path: Path, line: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(DEADLINE)
        sock.connect(str(path))
        sock.sendall(line)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    reply: dict[str, object] = json.loads(data)
    return reply


def test_control_socket_is_private_and_never_taken_over(
    tmp_path: Path,
    pki: TestPKI,
    start_server: ServerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "control.sock"
    # A socket left by a server killed with -9: nobody answers on it, so it is replaced.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    monkeypatch.setattr(control, "TIMEOUT", 1.0)
    old_umask = os.umask(0)  # the mode must not depend on the umask
    try:
        running = start_server(control=str(path))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ctl-")]  # staging removed

    # A second server refuses to start on a live socket, and leaves it alone.
    config = ServerConfig(pki=pki.dir, host="127.0.0.1", port=0, control=str(path))
    second = ChatServer(config)
    with pytest.raises(StartupError, match="in use by another running server"):
        second.bind()
    second._close_all()
    assert _request(path, b'{"command": "who"}\n')["ok"] is True

    # Not a socket: refused, and the file is left as it was.
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    config = ServerConfig(pki=pki.dir, host="127.0.0.1", port=0, control=str(other))
    third = ChatServer(config)
    with pytest.raises(StartupError, match="exists and is not a socket"):
        third.bind()
    third._close_all()
    assert other.read_text() == "mine"

    # Garbage and stalls hurt only their sender: a stalled client holds no one up, and is cut
    # off after the timeout; garbage and oversized requests get one error line.
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(str(path))
    stalled.sendall(b'{"command": "wh')
    alice, bob = running.join("alice"), running.join("bob")
    assert _request(path, b"\xff\xfegarbage\n") == {
        "ok": False,
        "error": 'bad request: expected one JSON object: {"command": "who", "args": ""}',
    }
    assert "unknown command" in str(_request(path, b'{"command": "shutdown"}\n')["error"])
    assert "longer than" in str(_request(path, b"x" * (control.MAX_REQUEST + 10))["error"])
    assert _request(path, b'{"command": "who"}\n')["sessions"] != []
    alice.send("still fine")
    bob.wait_for("msg", text="still fine")
    stalled.settimeout(DEADLINE)
    start = time.monotonic()
    assert stalled.recv(100) == b""  # closed by the server, unanswered
    assert time.monotonic() - start < DEADLINE
    stalled.close()

    running.stop()
    assert not path.exists()
