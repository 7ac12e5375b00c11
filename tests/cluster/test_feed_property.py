"""The feed, over a real redis-server, under random interleavings: three nodes say lines, lag,
lose their connection, see time pass and run their loops in any order. In the end every member
has been sent exactly the room's log (every line but its own, each once, in the log's order),
and every line a member said is in the log or its sender was told it was refused. That is what
the hand-over between pushed entries and catch-up reads (cluster/engine.py) must keep true.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlschat.cluster import stream
from mtlschat.cluster.keys import RoomKeys
from mtlschat.history.store import MSG

from .logview import log_records
from .test_engine import Node, pump

NODES = 3
_rooms = itertools.count()

op = st.one_of(
    st.tuples(st.just("say"), st.integers(0, NODES - 1), st.integers(1, 60)),
    st.tuples(st.just("round"), st.integers(0, NODES - 1), st.integers(1, 3)),
    st.tuples(st.just("lag"), st.integers(0, NODES - 1), st.booleans()),
    st.tuples(st.just("cut"), st.integers(0, NODES - 1), st.just(0)),
    st.tuples(st.just("time"), st.just(0), st.integers(1, 6)),
)


def refused_lines(node: Node, member: Any) -> int:
    """Lines the member was told were not sent (one error per refusal, "(N lines)" if several)."""
    count = 0
    for event in node.out.get(member.id, []):
        if event["type"] == "error" and event["code"] in ("not_delivered", "rate_limited"):
            several = re.search(r"\((\d+) lines\)$", event["text"])
            count += int(several.group(1)) if several else 1
    return count


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(op, min_size=5, max_size=40))
def test_every_member_is_sent_the_log_once_in_order(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch, ops: list[tuple[str, int, int]]
) -> None:
    # Small reads and a small hold (40 records, 5 entries a read): lagging members and
    # catch-ups that take several full reads happen within a few lines.
    monkeypatch.setattr(stream, "FEED_RECORDS", 20)
    monkeypatch.setattr(stream, "FEED_COUNT", 5)
    keys = RoomKeys(f"prop{next(_rooms)}")  # (a room of its own per example)
    r = redis_server.client()
    now = [1000.0]
    lag = [False] * NODES
    nodes = [
        Node(
            redis_server.url,
            f"n{i}",
            keys=keys,
            clock=lambda: now[0],
            lagging=functools.partial(lag.__getitem__, i),  # (each node's own flag)
        )
        for i in range(NODES)
    ]
    try:
        pump(nodes, lambda: all(n.engine.ready for n in nodes))
        members = [n.join(f"m{i}") for i, n in enumerate(nodes)]
        said = [0] * NODES
        count = 0
        for kind, i, arg in ops:
            node = nodes[i]
            if kind == "say":
                node.room.feed(
                    members[i], "".join(f"m{i}.{count + k}\n" for k in range(arg)).encode()
                )
                count += arg
                said[i] += arg
                node.round(0)
            elif kind == "round":
                for _ in range(arg):
                    node.round(0)
            elif kind == "lag":
                lag[i] = bool(arg)
            elif kind == "cut":
                node.engine.link._fail("test: the connection was cut")
            else:  # (tenths of a second: a node not run for 3 s of it finds Redis late)
                now[0] += arg / 10
        lag[:] = [False] * NODES

        def logged() -> list[tuple[str, str]]:
            return [(x.sender, x.text) for x in log_records(r, keys) if x.kind == MSG]

        def settled() -> bool:
            now[0] += 0.05  # (reconnects and re-sends fall due)
            if not all(n.engine.ready and not n.engine.backlog and not n.engine.link.pending
                       for n in nodes):  # fmt: skip
                return False
            log = logged()
            return all(
                n.said(m) == [text for who, text in log if who != f"m{i}"]
                for i, (n, m) in enumerate(zip(nodes, members, strict=True))
            )

        pump(nodes, settled, timeout=30)
        log = logged()
        assert len({text for _, text in log}) == len(log), "a line is in the log twice"
        for i, (node, member) in enumerate(zip(nodes, members, strict=True)):
            mine = sum(1 for who, _ in log if who == f"m{i}")
            assert mine + refused_lines(node, member) == said[i], "a line was lost silently"
    finally:
        for node in nodes:
            node.close()
