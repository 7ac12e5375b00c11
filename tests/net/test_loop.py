"""Event-loop paths over real TLS sockets: blocked writes, closing peers that never read, the
internal-error guard, the shutdown grace period."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from mtlschat.chat.room import Session

from .conftest import DEADLINE, ChatClient, stalled_client

if TYPE_CHECKING:
    from .conftest import RunningServer, ServerFactory

LINE = "q" * 1000
BACKLOG = 400  # lines of LINE: 400 KB, more than the kernel holds (send + receive buffers)


def _stalled(server: RunningServer, name: str) -> ChatClient:
    return stalled_client(server.port, server.context(name))


def _fill(alice: ChatClient, bob: ChatClient) -> list[str]:
    """alice sends BACKLOG long lines; bob, who reads, gets them all. Returns the texts."""
    texts = [f"{i} {LINE}" for i in range(BACKLOG)]
    for i in range(0, BACKLOG, 50):
        alice.sock.sendall("".join(f"{t}\n" for t in texts[i : i + 50]).encode())
        for t in texts[i : i + 50]:
            assert bob.wait_for("msg")["text"] == t
    return texts


def test_output_queued_behind_a_blocked_write_arrives_whole(chat_server: RunningServer) -> None:
    alice, bob = chat_server.join("alice"), chat_server.join("bob")
    carol = _stalled(chat_server, "carol")
    bob.wait_for("join", name="carol")
    texts = _fill(alice, bob)  # carol's socket is full: her writes block, the rest queues
    alice.send("last")
    assert bob.wait_for("msg")["text"] == "last"
    got = [carol.wait_for("msg")["text"] for _ in range(BACKLOG + 1)]
    assert got == [*texts, "last"]  # nothing lost, repeated or reordered
    carol.send("caught up")
    assert alice.wait_for("msg")["text"] == "caught up"


def test_closing_peer_that_never_takes_its_bye_is_cut(start_server: ServerFactory) -> None:
    server = start_server(close_linger=0.5)
    alice, bob = server.join("alice"), server.join("bob")
    carol = _stalled(server, "carol")
    _fill(alice, bob)
    carol.send("/quit")  # the room says bye, but carol's socket cannot take it
    line = server.log.wait(r"disconnect carol from .*: quit")
    assert line.endswith("quit (peer did not take its last bytes)")
    assert bob.wait_for("leave", name="carol")["reason"] == "quit"
    alice.send("carol is gone")
    assert bob.wait_for("msg")["text"] == "carol is gone"
    carol.close()


def test_internal_error_costs_one_connection(
    chat_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = chat_server.server.room
    feed = room.feed

    def buggy_feed(session: Session, data: bytes) -> None:  # a bug that one input triggers
        if b"boom" in data:
            raise RuntimeError("a bug")
        feed(session, data)

    monkeypatch.setattr(room, "feed", buggy_feed)
    alice, bob, carol = (chat_server.join(n) for n in ("alice", "bob", "carol"))
    carol.send("boom")
    chat_server.log.wait(r"internal error on connection from 127\.0\.0\.1:\d+; dropping it")
    chat_server.log.wait(r"disconnect carol from .*: internal error")
    carol.wait_closed()
    assert alice.wait_for("leave", name="carol")["reason"] == "internal error"
    alice.send("the server lives")
    assert bob.wait_for("msg")["text"] == "the server lives"
    assert chat_server.join("dave").sock is not None


def test_shutdown_grace_period_bounds_the_goodbyes(start_server: ServerFactory) -> None:
    server = start_server(shutdown_grace=0.5)
    alice, bob = server.join("alice"), server.join("bob")
    carol = _stalled(server, "carol")
    _fill(alice, bob)
    start = time.monotonic()
    server.stop()  # joins the loop thread: it must not wait for carol beyond the grace period
    assert time.monotonic() - start < DEADLINE / 2
    assert bob.wait_closed()[-1] == {"type": "bye", "reason": "server shutting down"}
    line = server.log.wait(r"disconnect carol from .*")
    assert line.endswith("server shutting down")
    carol.close()
    alice.close()
