"""Hypothesis: however publishes and deliveries of N relayed nodes interleave, every node shows
the same room: the same lines, joins and leaves in the same order (the log's), and each
speaker every line but its own."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mtlschat.chat.room import Session
from mtlschat.history.store import CHAT_KINDS

from .relay_harness import Cluster

NODES = 3
NAMES = ["ann", "bob", "cy", "Ann"]
LINES = ["hi", "/me waves", "/msg watch0 psst", "/msg ann hey", "yo\nsecond", "/who", "/quit"]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.integers(0, NODES - 1), st.integers(0, len(NAMES) - 1)),
        st.tuples(st.just("say"), st.integers(0, 7), st.sampled_from(LINES)),
        st.tuples(st.just("close"), st.integers(0, 7), st.just("")),
        st.tuples(st.just("publish"), st.integers(0, NODES - 1), st.just("")),
        st.tuples(st.just("deliver"), st.integers(0, NODES - 1), st.just("")),
    ),
    max_size=50,
)

SHOWN = ("msg", "action", "join", "leave")


def visible(events: list[dict[str, Any]]) -> list[tuple[object, ...]]:
    return [
        (e["type"], e.get("id"), e.get("from") or e.get("name"), e.get("text"))
        for e in events
        if e["type"] in SHOWN
    ]


@settings(max_examples=150, deadline=None)
@given(ops)
def test_every_node_shows_the_same_room(script: list[tuple[str, int, Any]]) -> None:
    c = Cluster(NODES)
    watchers = [node.open(f"watch{i}") for i, node in enumerate(c.nodes)]
    c.settle()
    for node, w in zip(c.nodes, watchers, strict=True):
        node.take(w)
    speakers: list[tuple[int, Session, int]] = []  # node, session, last offset at its open
    for op, a, b in script:
        if op == "open":
            speakers.append((a, c.nodes[a].open(NAMES[b]), c.nodes[a].mirror_offset()))
        elif op == "say" and speakers:
            i, s, _ = speakers[a % len(speakers)]
            c.nodes[i].send(s, *b.split("\n"))
        elif op == "close" and speakers:
            i, s, _ = speakers[a % len(speakers)]
            c.nodes[i].room.end(s, "gone", gone=True)
        elif op == "publish":
            c.nodes[a].publish()
        elif op == "deliver":
            c.nodes[a].deliver()
    c.settle()

    got = [node.take(w) for node, w in zip(c.nodes, watchers, strict=True)]
    seen = [visible(events) for events in got]
    assert seen[0] == seen[1] == seen[2]
    # A DM reaches the recipient's sessions on whichever node, and no third party.
    dms = [r.offset for r in c.log.records if r.kind == "dm" and r.to == "watch0"]
    assert [e["id"] for e in got[0] if e["type"] == "dm"] == dms
    assert not [e for events in got[1:] for e in events if e["type"] == "dm"]
    ids = [e[1] for e in seen[0] if e[0] in ("msg", "action")]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    said = [r for r in c.log.records if r.kind in ("msg", "action")]
    assert ids == [r.offset for r in said]
    # A speaker still in the room got every line delivered after it joined, but its own.
    for i, s, start in speakers:
        if s.closing is not None:
            continue
        got = [e[1] for e in visible(c.nodes[i].take(s)) if e[0] in ("msg", "action")]
        assert got == [r.offset for r in said if r.offset > start and r.origin != s.origin]
    # The mirrors agree with the log.
    lines = [r.offset for r in c.log.records if r.kind in CHAT_KINDS]
    for node in c.nodes:
        assert node.room.history is not None
        assert [r.offset for r in node.store.since("main", 0, 10_000, "x")] == lines
