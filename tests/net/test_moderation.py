"""Operators and moderation against real server processes: kick, ban (kept across a restart),
mute, topic, motd, operators re-read from the config file on reload, and the audit log.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .conftest import ChatClient, Closed, client_context

if TYPE_CHECKING:
    from conftest import ServerProcess, TestPKI


def _join(server: ServerProcess, pki: TestPKI, name: str) -> ChatClient:
    client = ChatClient(server.port, client_context(pki.user(name), pki.ca_cert))
    client.wait_for("welcome", name=name)
    return client


def _refused(server: ServerProcess, pki: TestPKI, name: str) -> list[dict[str, object]]:
    client = ChatClient(server.port, client_context(pki.user(name), pki.ca_cert))
    try:
        return client.wait_closed()
    except Closed:
        return client.seen


def test_only_operators_moderate(
    fresh_pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server(fresh_pki.dir, "--operators", "alice")
    bob = _join(server, fresh_pki, "bob")
    for line in ("/kick alice", "/ban alice", "/mute alice", "/topic mine now", "/bans"):
        bob.send(line)
        assert bob.wait_for("error")["code"] == "not_operator"
    bob.send("/topic")
    assert bob.wait_for("info")["text"] == "no topic"


def test_kick_and_ban_are_announced_audited_and_the_ban_survives_a_restart(
    fresh_pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server(fresh_pki.dir, "--operators", "alice")
    alice = _join(server, fresh_pki, "alice")
    bob = _join(server, fresh_pki, "bob")
    carol = _join(server, fresh_pki, "carol")

    alice.send("/kick bob spamming")
    assert bob.wait_closed()[-1] == {"type": "bye", "reason": "kicked by alice: spamming"}
    assert carol.wait_for("info")["text"] == "alice kicked bob (spamming)"
    assert carol.wait_for("leave", name="bob")["reason"] == "kicked by alice: spamming"
    server.wait_log(r"audit: operator=alice action=kicked target=bob detail=spamming")

    bob = _join(server, fresh_pki, "bob")
    alice.send("/ban bob 2h flooding")
    assert bob.wait_closed()[-1] == {"type": "bye", "reason": "banned by alice: flooding"}
    assert carol.wait_for("info")["text"] == "alice banned bob (for 2h; flooding)"
    server.wait_log(r"audit: operator=alice action=banned target=bob detail=for 2h; flooding")
    seen = _refused(server, fresh_pki, "bob")
    assert seen[0]["type"] == "error" and seen[0]["code"] == "banned"
    assert "banned from this room by alice, until" in str(seen[0]["text"])
    alice.send("/bans")
    while "is banned" not in (text := alice.wait_for("info")["text"]):
        pass  # (alice heard her own announcements first)
    assert text.startswith("bob is banned from this room by alice, until ")

    # Restarted in place: the ban holds.
    assert server.stop() == 0
    server = spawn_server(fresh_pki.dir, "--operators", "alice", log=server.log_path)
    assert _refused(server, fresh_pki, "bob")[0]["code"] == "banned"
    alice = _join(server, fresh_pki, "alice")
    alice.send("/unban bob")
    assert alice.wait_for("info")["text"] == "alice unbanned bob"
    _join(server, fresh_pki, "bob")


def test_mute_and_topic(fresh_pki: TestPKI, spawn_server: Callable[..., ServerProcess]) -> None:
    server = spawn_server(fresh_pki.dir, "--operators", "alice", "--motd", "be nice")
    alice = _join(server, fresh_pki, "alice")
    bob = _join(server, fresh_pki, "bob")
    assert bob.wait_for("info")["text"] == "be nice"
    alice.send("/mute bob 10m")
    assert bob.wait_for("info")["text"] == "alice muted bob (for 10m)"
    bob.send("can you hear me")
    assert bob.wait_for("error")["code"] == "muted"
    alice.send("/unmute bob")
    assert bob.wait_for("info")["text"] == "alice unmuted bob"
    bob.send("now?")
    assert alice.wait_for("msg")["text"] == "now?"  # the muted line never arrived

    alice.send("/topic release on friday")
    assert bob.wait_for("info")["text"] == "alice set the topic (release on friday)"
    assert server.stop() == 0
    server = spawn_server(fresh_pki.dir, log=server.log_path)
    carol = ChatClient(server.port, client_context(fresh_pki.user("carol"), fresh_pki.ca_cert))
    carol.wait_for("welcome")
    assert carol.wait_for("info")["text"] == "topic: release on friday (set by alice)"


def test_operators_are_reread_from_the_config_file_on_reload(
    tmp_path: Path, fresh_pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    config = tmp_path / "server.toml"
    config.write_text("operators = []\n")
    server = spawn_server(fresh_pki.dir, "--config", str(config))
    alice = _join(server, fresh_pki, "alice")
    bob = _join(server, fresh_pki, "bob")
    alice.send("/kick bob")
    assert alice.wait_for("error")["code"] == "not_operator"
    config.write_text('operators = ["alice"]\nmotd = "welcome back"\n')
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r"operators: alice")
    alice.send("/kick bob")
    assert alice.wait_for("info")["text"] == "alice kicked bob"
    assert bob.wait_closed()[-1] == {"type": "bye", "reason": "kicked by alice"}
    carol = _join(server, fresh_pki, "carol")
    assert carol.wait_for("info")["text"] == "welcome back"
