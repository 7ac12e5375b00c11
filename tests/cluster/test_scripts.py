"""The Lua scripts against a real redis-server (redis-py only calls them and reads the keys)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from mtlschat.cluster import scripts, stream
from mtlschat.cluster.keys import RoomKeys
from mtlschat.history.store import Record

from .logview import log_entries, log_records

K = RoomKeys()


def run(r: redis.Redis, call: scripts.Call) -> Any:
    """EVALSHA, then EVAL on NOSCRIPT, as the engine does."""
    try:
        return r.execute_command(*scripts.evalsha(call))
    except redis.exceptions.NoScriptError:
        return r.execute_command(*scripts.eval_(call))


def hello(r: redis.Redis, node: str, names: list[str], epoch: str = "e1") -> Any:
    return run(r, scripts.hello_call(K, node=node, epoch=epoch, ts=1.0, names=names))


def publish(r: redis.Redis, node: str, batch: int, records: list[Record], **kw: Any) -> Any:
    opts: dict[str, Any] = {"epoch": "e1", "maxlen": 0, "rate": 0.0, "burst": 1, **kw}
    return run(r, scripts.publish_call(K, node=node, batch=batch, records=records, **opts))


def line(sender: str, text: str, kind: str = "msg", to: str = "") -> Record:
    return Record(0, time.time(), kind, sender, text, to, 7)


def record(kind: str, sender: str, text: str = "", origin: int = 0) -> Record:
    return Record(0, 1.0, kind, sender, text, "", origin)


@pytest.fixture
def r(redis_server: Any) -> redis.Redis:
    return redis_server.client()  # type: ignore[no-any-return]


def test_hello_creates_the_epoch_once_and_announces_the_nodes_members(r: redis.Redis) -> None:
    first = hello(r, "a", ["alice", "bob"], epoch="e1")
    assert first[0] == b"e1" and first[2] == 0
    again = hello(r, "b", ["carol"], epoch="e2")  # a second node keeps the first epoch
    assert again[0] == b"e1"
    snapshot = dict(zip(again[3][::2], again[3][1::2], strict=True))
    assert {k: sorted(v) for k, v in snapshot.items()} == {
        b"a": [b"alice", b"bob"],
        b"b": [b"carol"],
    }
    # A reconnect of "a" with bob gone and dave new: one leave and one join, nothing else.
    hello(r, "a", ["alice", "dave"])
    got = [sorted((rec.kind, rec.sender, rec.node) for rec in e.records) for e in log_entries(r)]
    assert got == [
        [("join", "alice", "a"), ("join", "bob", "a")],  # one entry per script call
        [("join", "carol", "b")],
        [("join", "dave", "a"), ("leave", "bob", "a")],
    ]
    assert again[1].decode() == log_entries(r)[1].id  # the stream id the snapshot is valid at


def test_publish_writes_a_batch_as_one_entry_numbers_chat_lines_only_and_applies_it_once(
    r: redis.Redis,
) -> None:
    hello(r, "a", [])
    join = record("join", "alice", origin=3)
    out = publish(r, "a", 1, [join, line("alice", "hi"), line("alice", "waves", "action")])
    assert out == [b"ok", b"", 2]
    assert r.smembers(K.members("a")) == {b"alice"}
    # The same batch again (re-sent after a lost connection): applied once only.
    assert publish(r, "a", 1, [line("alice", "hi")]) == [b"dup", b""]
    assert publish(r, "a", 2, [line("alice", "dm", "dm", to="bob")]) == [b"ok", b"", 3]
    assert r.xlen(K.log) == 2
    got = [(e.offset, e.kind, e.sender, e.text, e.to, e.origin, e.node) for e in log_records(r)]
    assert got == [
        (0, "join", "alice", "", "", 3, "a"),
        (1, "msg", "alice", "hi", "", 7, "a"),
        (2, "action", "alice", "waves", "", 7, "a"),
        (3, "dm", "alice", "dm", "bob", 7, "a"),
    ]
    assert [(e.base, e.last) for e in log_entries(r)] == [(0, 2), (2, 3)]
    publish(r, "a", 3, [record("leave", "alice", "quit", origin=3)])
    assert r.smembers(K.members("a")) == set()


def test_publish_refuses_a_stale_epoch(r: redis.Redis) -> None:
    hello(r, "a", [])
    r.flushall()  # Redis lost its data: the epoch is gone, and nothing may be appended
    assert publish(r, "a", 1, [line("alice", "hi")]) == [b"epoch", b""]
    assert r.xlen(K.log) == 0
    assert hello(r, "a", [], epoch="e2")[0] == b"e2"
    assert publish(r, "a", 2, [line("alice", "hi")]) == [b"epoch", b"e2"]
    assert publish(r, "a", 2, [line("alice", "hi")], epoch="e2")[2] == 1  # offsets start again


def test_the_rate_limit_is_shared_by_all_nodes(r: redis.Redis) -> None:
    hello(r, "a", [])
    hello(r, "b", [])
    lines = [line("alice", str(i)) for i in range(3)]
    assert publish(r, "a", 1, lines, rate=0.001, burst=4) == [b"ok", b"", 3]
    batch = [line("alice", "x"), line("bob", "mine"), line("alice", "y"), line("alice", "z")]
    out = publish(r, "b", 1, batch, rate=0.001, burst=4)
    # alice had one token left across the nodes: her first line here is taken, the other two
    # refused; bob has his own bucket.
    assert out == [b"ok", b'{"alice":1}', 5]
    assert stream.refused([rec[1:] for rec in batch], out[1]) == {2, 3}
    assert [rec.text for rec in log_records(r)] == ["0", "1", "2", "x", "mine"]
    assert [rec.offset for rec in log_records(r)] == [1, 2, 3, 4, 5]  # refused: no offset
    # Sent again (its reply was lost): not applied twice, and the same refusals come back.
    assert publish(r, "b", 1, batch, rate=0.001, burst=4) == [b"dup", b'{"alice":1}']


def test_mod_records_keep_the_moderation_state_and_the_newest_crl(r: redis.Redis) -> None:
    hello(r, "a", [])
    ban = '{"op": "ban", "name": "Mallory"}'
    mods = [
        record("mod", "op", ban),
        record("mod", "op", '{"op": "topic", "text": "hi"}'),
        record("mod", "op", '{"op": "crl", "number": 5, "pem": "P5"}'),
        record("mod", "op", '{"op": "crl", "number": 4, "pem": "P4"}'),
        record("mod", "op", "not json"),
    ]
    publish(r, "a", 1, mods)
    got = hello(r, "b", [])
    assert dict(zip(got[4][::2], got[4][1::2], strict=True)) == {
        b"ban:mallory": ban.encode(),
        b"topic": b'{"op": "topic", "text": "hi"}',
    }
    assert got[5:] == [b"5", b"P5"]
    publish(r, "a", 2, [record("mod", "op", '{"op": "unban", "name": "mallory"}')])
    assert r.hkeys(K.moderation) == [b"topic"]


def test_reap_announces_a_dead_nodes_members_once(r: redis.Redis) -> None:
    hello(r, "a", ["alice", "bob"])
    hello(r, "b", ["carol"])
    assert run(r, scripts.heartbeat_call(K, "a")) == 1
    r.zadd(K.nodes, {"a": 0})  # as if "a" last beat at the epoch: long dead
    before = len(log_records(r))
    assert run(r, scripts.reap_call(K)) == [b"a"]
    assert run(r, scripts.reap_call(K)) == []  # once only
    new = log_records(r)[before:]
    assert sorted((e.kind, e.sender, e.node) for e in new) == [
        ("leave", "alice", "a"),
        ("leave", "bob", "a"),
    ]
    assert not r.exists(K.members("a"))
    assert run(r, scripts.heartbeat_call(K, "a")) == 0  # "a" is told to say hello again
    assert run(r, scripts.heartbeat_call(K, "b")) == 1


def test_the_log_keeps_maxlen_chat_lines_in_whole_entries(r: redis.Redis) -> None:
    hello(r, "a", [])
    for batch in range(1, 31):
        publish(r, "a", batch, [line("alice", str(i)) for i in range(100)], maxlen=450)
    assert int(r.get(K.offset) or 0) == 3000
    offsets = [rec.offset for rec in log_records(r)]
    assert offsets == list(range(2501, 3001))  # 450 kept: the entry holding 2551 starts at 2501
    assert r.zcard(K.index) == 5


def test_bye_announces_a_stopping_nodes_members_at_once(r: redis.Redis) -> None:
    hello(r, "a", ["alice"])
    before = len(log_records(r))
    call = scripts.bye_call(K, node="a", reason="server shutting down")
    assert run(r, call) == [b"alice"]
    assert [(e.kind, e.sender, e.text) for e in log_records(r)[before:]] == [
        ("leave", "alice", "server shutting down")
    ]
    assert r.zscore(K.nodes, "a") is None and not r.exists(K.members("a"))


def test_every_entry_is_pushed_on_the_channel_as_it_is_in_the_log(r: redis.Redis) -> None:
    """What a caught-up node takes from the channel decodes to what the log holds: joins (hello),
    a batch with refusals (publish), and leaves (bye), from a node whose name has odd bytes."""
    sub = r.pubsub()
    sub.subscribe(K.push)
    assert sub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    node = "node one\nü"  # (lengths frame it: any byte may be in a name)
    hello(r, node, ["alice", "bob"])
    batch = [line("alice", "x"), line("alice", "y\nz"), line("bob", "mine")]
    assert publish(r, node, 1, batch, rate=0.001, burst=1)[:2] == [b"ok", b'{"alice":1}']
    run(r, scripts.bye_call(K, node=node, reason="stopped"))
    pushed = []
    while len(pushed) < 3:
        message = sub.get_message(timeout=5)
        assert message is not None, "a pushed entry did not come"
        pushed.append(stream.decode_push(message["data"]))
    assert pushed == log_entries(r)
    assert [[rec.text for rec in e.records] for e in pushed] == [
        ["", ""],
        ["x", "mine"],
        ["stopped"] * 2,
    ]
    assert pushed[1].node == node and pushed[1].base == 0 and pushed[1].last == 2
    with pytest.raises(ValueError):
        stream.decode_push(b"1-0 0 0 x 0\nnode[]")
