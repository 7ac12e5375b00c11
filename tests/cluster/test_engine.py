"""The node engine in-process, over a real redis-server: lost replies, epochs, the shared log."""

from __future__ import annotations

import json
import selectors
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from mtlschat.chat.room import Mode, Room, Session
from mtlschat.chat.settings import RoomSettings
from mtlschat.cluster import stream
from mtlschat.cluster.engine import Engine
from mtlschat.cluster.keys import RoomKeys
from mtlschat.cluster.url import RedisURL
from mtlschat.history.journal import Journal
from mtlschat.history.memory import MemoryStore
from mtlschat.history.store import Record

from .logview import log_records

K = RoomKeys()


class Node:
    """A relayed room and its engine, driven by this test's own selector loop."""

    def __init__(self, url: str, name: str, **options: Any) -> None:
        store = MemoryStore("", max_lines=1000)
        self.room = Room(RoomSettings(rate=0), history=Journal(store), relay=True, node=name)
        self.engine = Engine(self.room, RedisURL.parse(url), **options)
        self.sel = selectors.DefaultSelector()
        for link in self.engine.links:
            link.attach(self.sel)
        self.out: dict[int, list[dict[str, Any]]] = {}

    def round(self, timeout: float = 0.01) -> None:
        for key, mask in self.sel.select(timeout):
            key.data.on_ready(mask)
        self.engine.after_round()
        for s in self.room.flush():
            for line in s.take_output().splitlines():
                self.out.setdefault(s.id, []).append(json.loads(line))

    def join(self, name: str) -> Session:
        return self.room.open(name, Mode.JSON)

    def said(self, s: Session, kind: str = "msg") -> list[str]:
        return [m["text"] for m in self.out.get(s.id, []) if m["type"] == kind]

    def close(self) -> None:
        self.engine.close()
        self.sel.close()


def pump(nodes: list[Node], until: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        for node in nodes:
            node.round()


@pytest.fixture
def nodes(redis_server: Any) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(name: str, **options: Any) -> Node:
        node = Node(redis_server.url, name, **options)
        made.append(node)
        pump([node], lambda: node.engine.ready)
        return node

    yield make
    for node in made:
        node.close()


def log_texts(r: redis.Redis) -> list[str]:
    return [rec.text for rec in log_records(r) if rec.kind == "msg"]


def test_a_batch_whose_reply_was_lost_is_sent_again_and_applied_once(
    nodes: Callable[[str], Node], redis_server: Any
) -> None:
    a, b = nodes("a"), nodes("b")
    alice, bob = a.join("alice"), b.join("bob")
    r = redis_server.client()
    a.room.feed(alice, b"one\n")
    a.round(0)  # the batch goes out
    deadline = time.monotonic() + 10
    while log_texts(r) != ["one"]:  # Redis applied it...
        assert time.monotonic() < deadline
        time.sleep(0.01)
    a.engine.link._fail("test: the connection dropped before the reply was read")
    a.room.feed(alice, b"two\n")  # refused visibly while down
    pump([a, b], lambda: a.engine.ready and b.said(bob) == ["one"])
    a.room.feed(alice, b"three\n")
    pump([a, b], lambda: b.said(bob) == ["one", "three"])
    assert log_texts(r) == ["one", "three"]  # sent again, applied once
    assert a.engine.counters.resent == 1
    assert [m["code"] for m in a.out[alice.id] if m["type"] == "error"] == ["not_delivered"]


def test_the_history_mirror_is_filled_from_the_log_at_connect(
    nodes: Callable[[str], Node],
) -> None:
    a = nodes("a")
    alice = a.join("alice")
    for i in range(5):
        a.room.feed(alice, f"line {i}\n".encode())
    a.round(0)
    pump([a], lambda: a.room.history is not None and a.room.history.last_offset == 5)
    c = nodes("c")
    assert c.room.history is not None
    assert [r.text for r in c.room.history.last(10, "carol")] == [f"line {i}" for i in range(5)]


def test_the_log_is_trimmed_by_age(nodes: Callable[..., Node], redis_server: Any) -> None:
    r = redis_server.client()
    a = nodes("a")
    alice = a.join("alice")
    a.room.feed(alice, b"old\n")
    pump([a], lambda: log_texts(r) == ["old"])
    time.sleep(0.3)  # (stream ids are Redis's milliseconds: "old" is now 0.3 s old)
    line = Record(0, time.time(), "msg", "zed", "new")  # another node's line, as it writes them
    r.xadd(K.log, {"o": 1, "n": "z", "b": 1, "p": stream.pack([line])})
    b = nodes("b", max_age=0.2, trim_every=0.05)  # a node that keeps 0.2 s of history
    pump([a, b], lambda: log_texts(r) == ["new"])
    assert r.xlen(K.log) == 1


def test_a_burst_is_delivered_an_entry_a_round_and_waits_while_members_lag(
    nodes: Callable[..., Node], redis_server: Any
) -> None:
    now = [1000.0]
    lag = [True]
    a = nodes("a")
    b = nodes("b", clock=lambda: now[0], lagging=lambda: lag[0])
    alice, bob = a.join("alice"), b.join("bob")
    lag[0] = False
    pump([a, b], lambda: a.engine.counters.delivered == b.engine.counters.delivered == 2)
    lag[0] = True  # (the joins are in: what follows is the burst alone)
    r = redis_server.client()
    for part in range(3):  # three rounds of 2,500 lines: three log entries, each > FEED_RECORDS
        a.room.feed(alice, "".join(f"{part}.{i}\n" for i in range(2500)).encode())
        a.round(0)
    pump([a], lambda: len(log_texts(r)) == 7500)
    pump([b], lambda: b.engine.backlog >= 1)  # read, held: most members here lag
    for _ in range(5):
        b.round(0)
    assert b.said(bob) == [] and b.engine.counters.delivered == 2
    lag[0] = False  # caught up: one entry a round (an entry is one round of the node that said it)
    sizes = []
    while len(b.said(bob)) < 7500:
        before = len(b.said(bob))
        b.round(0.01)
        if len(b.said(bob)) > before:
            sizes.append(len(b.said(bob)) - before)
    assert sizes == [2500, 2500, 2500]  # (the last two were read in one reply)
    # Members that never catch up wait PAUSE_MAX at most: then the next round is delivered.
    lag[0] = True
    a.room.feed(alice, b"late\n")
    a.round(0)
    pump([a], lambda: log_texts(r)[-1] == "late")
    pump([b], lambda: b.engine.backlog == 1)
    b.round(0)
    assert b.said(bob)[-1] != "late"
    now[0] += 0.6
    b.round(0)
    assert b.said(bob)[-1] == "late"


def test_a_node_that_finds_the_log_trimmed_past_what_it_read_reloads_its_mirror(
    nodes: Callable[..., Node],
) -> None:
    a, b = nodes("a", maxlen=5), nodes("b")
    alice, bob = a.join("alice"), b.join("bob")
    for i in range(3):
        a.room.feed(alice, f"old {i}\n".encode())
    pump([a, b], lambda: b.said(bob) == ["old 0", "old 1", "old 2"])
    b.engine.link._fail("test: b is cut off")  # (and b's loop does not run to reconnect)
    for i in range(20):  # one entry a round
        a.room.feed(alice, f"new {i}\n".encode())
        a.round(0)
    pump([a], lambda: a.room.history is not None and a.room.history.last_offset == 23)
    pump([a, b], lambda: b.engine.counters.gaps == 1 and b.engine.last_id is not None)
    pump([a, b], lambda: b.room.history is not None and b.room.history.last_offset == 23)
    assert b.room.history is not None
    kept = b.room.history.last(100, "bob")
    assert [(x.offset, x.text) for x in kept] == [(19 + i, f"new {15 + i}") for i in range(5)]


def test_a_caught_up_node_takes_pushed_entries_and_reads_the_log_only_when_behind(
    nodes: Callable[..., Node],
) -> None:
    """Lines said one a round reach a caught-up node as pushes, with no read of the log; a node
    whose members lag stops taking them past its bound, catches up from the log while more
    lines keep coming, and has every line once, in order."""
    now = [1000.0]
    lag = [False]
    a = nodes("a")
    b = nodes("b", clock=lambda: now[0], lagging=lambda: lag[0])
    alice, bob = a.join("alice"), b.join("bob")
    pump([a, b], lambda: b.engine.counters.delivered == 2)
    reads = b.engine.counters.reads
    sent: list[str] = []

    def say(n: int) -> None:
        for _ in range(n):
            sent.append(f"line {len(sent)}")
            a.room.feed(alice, f"{sent[-1]}\n".encode())
            a.round(0)

    say(30)
    pump([a, b], lambda: b.said(bob) == sent)
    assert b.engine.counters.reads == reads and b.engine.counters.pushed >= 30
    lag[0] = True  # b holds what is pushed, up to its bound (500 entries): the rest waits
    say(2 * stream.FEED_COUNT + 100)  # (more than one catch-up read takes)
    pump([a, b], lambda: b.engine.backlog == stream.FEED_COUNT)
    assert len(b.said(bob)) == 30
    lag[0] = False
    pump([b], lambda: b.engine.counters.reads == reads + 1)  # a full read: still behind
    say(50)  # (while b catches up from the log: pushed, and ignored until it is caught up)
    pump([a, b], lambda: b.said(bob) == sent)
    assert b.engine.counters.reads >= reads + 2
    pushed = b.engine.counters.pushed
    say(10)  # caught up again: pushed
    pump([a, b], lambda: b.said(bob) == sent)
    assert b.engine.counters.pushed == pushed + 10


def test_an_acl_user_with_the_rooms_keys_and_channel_serves_and_one_without_is_told_why(
    redis_server: Any,
) -> None:
    """What docs/scaling.md tells operators to grant a dedicated Redis user is enough; a user
    without the channel (Redis 7 gives new users none) fails its connection with NOPERM, said
    in the link's reason, and the room stays degraded rather than silent."""
    r = redis_server.client()
    grant = ["~mtlschat:*", "&mtlschat:*", "+@all", "-@dangerous"]
    r.execute_command("ACL", "SETUSER", "mtlschat", "on", ">pw-acl-1", *grant)
    r.execute_command("ACL", "SETUSER", "nochan", "on", ">pw-acl-2", *grant[:1], *grant[2:])
    url = redis_server.url.replace("redis://", "redis://mtlschat@")
    a, b = Node(url, "a", password="pw-acl-1"), Node(url, "b", password="pw-acl-1")
    c = Node(redis_server.url.replace("redis://", "redis://nochan@"), "c", password="pw-acl-2")
    try:
        pump([a, b], lambda: a.engine.ready and b.engine.ready)
        alice, bob = a.join("alice"), b.join("bob")
        a.room.feed(alice, b"granted\n")
        pump([a, b], lambda: b.said(bob) == ["granted"])
        pump([c], lambda: "NOPERM" in c.engine.link.reason)
        assert not c.engine.ready and c.room.degraded is not None
    finally:
        for node in (a, b, c):
            node.close()
