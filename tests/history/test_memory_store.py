"""The in-memory history store (a relayed room's mirror of the shared log)."""

from __future__ import annotations

import pytest

from mtlschat.history.memory import MemoryStore
from mtlschat.history.store import DM, HIDDEN, MSG, ROOM, Record


def line(offset: int, text: str = "", ts: float = 1000.0, kind: str = MSG, to: str = "") -> Record:
    return Record(offset, ts, kind, "alice", text or f"line {offset}", to)


def test_append_and_queries() -> None:
    store = MemoryStore("e1")
    assert store.epoch == "e1" and store.last_offset(ROOM) == 0
    store.append(ROOM, [line(1, "hello world"), line(2, "secret", kind=DM, to="bob"), line(3)])
    assert store.last_offset(ROOM) == 3
    assert [r.kind for r in store.since(ROOM, 0, 10, "carol")] == [MSG, HIDDEN, MSG]
    assert [r.offset for r in store.since(ROOM, 1, 1, "bob")] == [2]
    assert [r.offset for r in store.last(ROOM, 2, "carol")] == [1, 3]
    assert [r.offset for r in store.last(ROOM, 5, "Bob")] == [1, 2, 3]
    assert [r.offset for r in store.search(ROOM, "WORLD hello", 5, "x")] == [1]
    assert store.search(ROOM, "secret", 5, "carol") == []
    assert [r.offset for r in store.search(ROOM, "secret", 5, "bob")] == [2]
    assert store.search(ROOM, "!!", 5, "bob") == []
    with pytest.raises(ValueError):
        store.append(ROOM, [line(3)])


def test_the_count_cap_and_age() -> None:
    store = MemoryStore("e1", max_lines=8, max_age=60)
    for i in range(1, 31):
        store.append(ROOM, [line(i, ts=1000.0 + i)])
    kept = store.since(ROOM, 0, 100, "x")
    assert 8 <= len(kept) <= 9 and kept[-1].offset == 30  # the cap, plus its eighth of slack
    assert store.trim(1000.0 + 28 + 60.5, 100) == len(kept) - 2  # older than a minute
    assert [r.offset for r in store.since(ROOM, 0, 100, "x")] == [29, 30]
    assert store.last_offset(ROOM) == 30


def test_load_replaces_and_keeps_the_offsets_going() -> None:
    store = MemoryStore("")
    store.append(ROOM, [line(1)])
    store.load(ROOM, "e2", [line(5), line(6)], 8)
    assert store.epoch == "e2" and store.last_offset(ROOM) == 8
    assert [r.offset for r in store.since(ROOM, 0, 10, "x")] == [5, 6]
    store.append(ROOM, [line(9)])
    store.load(ROOM, "e3")
    assert store.last_offset(ROOM) == 0 and store.last(ROOM, 5, "x") == []
