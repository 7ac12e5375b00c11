"""The Lua scripts against a real redis-server (redis-py only calls them and reads the keys)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from mtlschat.cluster import scripts
from mtlschat.cluster.keys import RoomKeys

K = RoomKeys()


def run(r: redis.Redis, call: scripts.Call) -> Any:
    """EVALSHA, then EVAL on NOSCRIPT, as the engine does."""
    try:
        return r.execute_command(*scripts.evalsha(call))
    except redis.exceptions.NoScriptError:
        return r.execute_command(*scripts.eval_(call))


def hello(r: redis.Redis, node: str, names: list[str], epoch: str = "e1") -> Any:
    return run(r, scripts.hello_call(K, node=node, epoch=epoch, maxlen=0, ts=1.0, names=names))


def publish(r: redis.Redis, node: str, batch: int, records: list[Any], **kw: Any) -> Any:
    opts: dict[str, Any] = {"epoch": "e1", "maxlen": 0, "rate": 0.0, "burst": 1, **kw}
    return run(r, scripts.publish_call(K, node=node, batch=batch, records=records, **opts))


def line(sender: str, text: str, kind: str = "msg", to: str = "") -> tuple[Any, ...]:
    return (kind, time.time(), sender, text, to, 7, sender.casefold())


def entries(r: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in r.xrange(K.log)]


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
    kinds = [(e["k"], e["s"], e["n"]) for e in entries(r)]
    assert sorted(kinds[:3]) == [
        ("join", "alice", "a"),
        ("join", "bob", "a"),
        ("join", "carol", "b"),
    ]
    assert sorted(kinds[3:]) == [("join", "dave", "a"), ("leave", "bob", "a")]
    assert again[1] == r.xrange(K.log)[2][0]  # the stream id the snapshot is valid at


def test_publish_numbers_chat_lines_only_and_skips_a_batch_already_applied(r: redis.Redis) -> None:
    hello(r, "a", [])
    join = ("join", 1.0, "alice", "", "", 3, "alice")
    out = publish(r, "a", 1, [join, line("alice", "hi"), line("alice", "waves", "action")])
    assert out == [b"ok", [], 2]
    assert r.smembers(K.members("a")) == {b"alice"}
    # The same batch again (re-sent after a lost connection): applied once only.
    assert publish(r, "a", 1, [line("alice", "hi")]) == [b"dup"]
    assert publish(r, "a", 2, [line("alice", "dm", "dm", to="bob")]) == [b"ok", [], 3]
    got = [(e["o"], e["k"], e["s"], e["x"], e["r"], e["g"], e["n"]) for e in entries(r)]
    assert got == [
        ("0", "join", "alice", "", "", "3", "a"),
        ("1", "msg", "alice", "hi", "", "7", "a"),
        ("2", "action", "alice", "waves", "", "7", "a"),
        ("3", "dm", "alice", "dm", "bob", "7", "a"),
    ]
    leave = ("leave", 1.0, "alice", "quit", "", 3, "alice")
    publish(r, "a", 3, [leave])
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
    assert publish(r, "a", 1, lines, rate=0.001, burst=4)[1] == []
    out = publish(r, "b", 1, [*lines, line("bob", "mine")], rate=0.001, burst=4)
    assert out[1] == [1, 2]  # alice has one token left across the nodes; bob has his own
    assert [e["x"] for e in entries(r)] == ["0", "1", "2", "0", "mine"]


def test_mod_records_keep_the_moderation_state_and_the_newest_crl(r: redis.Redis) -> None:
    hello(r, "a", [])
    ban = '{"op": "ban", "name": "Mallory"}'
    mods = [
        ("mod", 1.0, "op", ban, "", 0, "mallory"),
        ("mod", 1.0, "op", '{"op": "topic", "text": "hi"}', "", 0, ""),
        ("mod", 1.0, "op", '{"op": "crl", "number": 5, "pem": "P5"}', "", 0, ""),
        ("mod", 1.0, "op", '{"op": "crl", "number": 4, "pem": "P4"}', "", 0, ""),
        ("mod", 1.0, "op", "not json", "", 0, ""),
    ]
    publish(r, "a", 1, mods)
    got = hello(r, "b", [])
    assert dict(zip(got[4][::2], got[4][1::2], strict=True)) == {
        b"ban:mallory": ban.encode(),
        b"topic": b'{"op": "topic", "text": "hi"}',
    }
    assert got[5:] == [b"5", b"P5"]
    publish(r, "a", 2, [("mod", 1.0, "op", '{"op": "unban", "name": "mallory"}', "", 0, "mallory")])
    assert r.hkeys(K.moderation) == [b"topic"]


def test_reap_announces_a_dead_nodes_members_once(r: redis.Redis) -> None:
    hello(r, "a", ["alice", "bob"])
    hello(r, "b", ["carol"])
    assert run(r, scripts.heartbeat_call(K, "a")) == 1
    r.zadd(K.nodes, {"a": 0})  # as if "a" last beat at the epoch: long dead
    before = r.xlen(K.log)
    assert run(r, scripts.reap_call(K, maxlen=0)) == [b"a"]
    assert run(r, scripts.reap_call(K, maxlen=0)) == []  # once only
    new = entries(r)[before:]
    assert sorted((e["k"], e["s"], e["n"]) for e in new) == [
        ("leave", "alice", "a"),
        ("leave", "bob", "a"),
    ]
    assert not r.exists(K.members("a"))
    assert run(r, scripts.heartbeat_call(K, "a")) == 0  # "a" is told to say hello again
    assert run(r, scripts.heartbeat_call(K, "b")) == 1


def test_the_stream_is_trimmed_to_about_maxlen(r: redis.Redis) -> None:
    hello(r, "a", [])
    for batch in range(1, 31):
        publish(r, "a", batch, [line("alice", str(i)) for i in range(100)], maxlen=500)
    assert 500 <= r.xlen(K.log) < 1000
    assert int(r.get(K.offset) or 0) == 3000


def test_bye_announces_a_stopping_nodes_members_at_once(r: redis.Redis) -> None:
    hello(r, "a", ["alice"])
    before = r.xlen(K.log)
    call = scripts.bye_call(K, node="a", maxlen=0, reason="server shutting down")
    assert run(r, call) == [b"alice"]
    assert [(e["k"], e["s"], e["x"]) for e in entries(r)[before:]] == [
        ("leave", "alice", "server shutting down")
    ]
    assert r.zscore(K.nodes, "a") is None and not r.exists(K.members("a"))
