"""The room with a real history file (sans-I/O: bytes in, bytes out; the store is real SQLite)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mtlschat.chat.room import Mode, Room, Session
from mtlschat.history.journal import Journal
from mtlschat.history.sqlite import SQLiteStore


class Chat:
    """A room over ``path`` driven like the event loop drives it."""

    def __init__(self, path: Path, **journal: Any) -> None:
        self.now = 1_700_000_000.0
        self.journal = Journal(SQLiteStore.open(path), **journal)
        self.room = Room(clock=lambda: self.now, wall=lambda: self.now, history=self.journal)

    def join(self, name: str, mode: Mode = Mode.JSON) -> tuple[Session, list[bytes]]:
        s = self.room.open(name, mode)
        return s, self.round()[s.id]

    def say(self, s: Session, *lines: str) -> dict[int, list[bytes]]:
        for line in lines:
            self.now += 1
            self.room.feed(s, line.encode() + b"\n")
        return self.round()

    def round(self) -> dict[int, list[bytes]]:
        return {s.id: s.take_output().splitlines() for s in self.room.flush()}

    def close(self) -> None:
        self.journal.close()


def objs(lines: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[Chat]:
    c = Chat(tmp_path / "h.db")
    yield c
    c.close()


def test_a_late_joiner_gets_the_last_20_lines_marked_as_history(chat: Chat) -> None:
    alice, _ = chat.join("alice")
    chat.say(alice, *(f"line {i}" for i in range(1, 31)))
    _, got = chat.join("bob")
    welcome, start, *lines = objs(got)
    assert welcome["resume"]["offset"] == 30 and welcome["resume"]["epoch"] == chat.journal.epoch
    assert start == {"type": "history", "source": "join", "count": 20}
    assert [(m["id"], m["text"], m["history"]) for m in lines] == [
        (i, f"line {i}", "join") for i in range(11, 31)
    ]
    assert all(m["type"] == "msg" and m["from"] == "alice" for m in lines)

    _, text = chat.join("carol", Mode.TEXT)
    assert text[1] == b"* history: the last 20 lines (/history N for more)"
    assert text[2] == b"[2023-11-14 22:13:31] <alice> line 11"  # UTC date and time
    assert text[-1] == b"* end of history"


def test_history_n_and_search_in_both_modes(chat: Chat) -> None:
    alice, _ = chat.join("alice")
    chat.say(alice, *(f"release {i}" if i % 10 == 0 else f"chat {i}" for i in range(1, 151)))
    bob, _ = chat.join("bob")
    carol, _ = chat.join("carol", Mode.TEXT)
    got = objs(chat.say(bob, "/history 100")[bob.id])
    assert got[0] == {"type": "history", "source": "request", "count": 100}
    assert [m["id"] for m in got[1:]] == list(range(51, 151))
    assert len(objs(chat.say(bob, "/history 5000")[bob.id])) == 151  # capped at 1000 lines
    got = objs(chat.say(bob, "/search RELEASE")[bob.id])
    assert got[0] == {"type": "history", "source": "search", "count": 15, "query": "RELEASE"}
    assert [m["text"] for m in got[1:]] == [f"release {i}" for i in range(10, 151, 10)]
    text = chat.say(carol, "/search release 14", "/search nothing-like-it")[carol.id]
    assert text == [
        b"* search: the last line matching release 14",
        b"[2023-11-14 22:15:40] <alice> release 140",
        b"* end of history",
        b"* search: no line matches nothing-like-it",
    ]
    assert objs(chat.say(bob, "/history x")[bob.id])[0]["code"] == "bad_usage"


def test_dms_never_reach_a_third_party_through_history_search_or_resume(chat: Chat) -> None:
    alice, _ = chat.join("alice")
    chat.join("bob")
    epoch = chat.journal.epoch
    chat.say(alice, "public one", "/msg bob the secret word is swordfish", "public two")
    for name in ("carol", "Bob", "alice"):
        s, got = chat.join(name)
        texts = [m.get("text") for m in objs(got)]
        replies = objs(chat.say(s, "/history 50", "/search swordfish", f"/resume {epoch} 0")[s.id])
        texts += [m.get("text") for m in replies]
        leaked = any("swordfish" in str(t) for t in texts)
        assert leaked == (name != "carol"), name
    carol, _ = chat.join("carol")
    resumed = objs(chat.say(carol, f"/resume {epoch} 0")[carol.id])
    # carol learns nothing of the DM, not even as a gap: offsets 1..3 are all accounted for
    assert [m["type"] for m in resumed] == ["msg", "msg", "resumed"]
    assert resumed[-1]["offset"] == 3


def test_no_dm_storage_keeps_the_offsets_but_not_the_message(tmp_path: Path) -> None:
    chat = Chat(tmp_path / "h.db", keep_dms=False)
    alice, _ = chat.join("alice")
    bob, _ = chat.join("bob")
    got = chat.say(alice, "hi", "/msg bob psst", "bye")
    assert b"psst" in b"".join(got[bob.id])  # delivered live all the same
    chat.close()
    store = SQLiteStore.open(tmp_path / "h.db")
    rows = store.since("main", 0, 10, "bob")
    assert [(r.offset, r.kind, r.text) for r in rows] == [
        (1, "msg", "hi"),
        (2, "hidden", ""),
        (3, "msg", "bye"),
    ]
    assert b"psst" not in (tmp_path / "h.db").read_bytes()
    store.close()


def test_resume_replays_what_was_missed_exactly_once_skipping_own_lines(chat: Chat) -> None:
    alice, _ = chat.join("alice")
    bob, got = chat.join("bob")
    epoch, seen = chat.journal.epoch, objs(got)[0]["resume"]["offset"]
    chat.say(alice, "one", "two")
    chat.say(bob, "bob was here")
    chat.room.end(bob, "network", gone=True)
    chat.say(alice, "three", "/me four")
    bob2, got = chat.join("bob")
    assert objs(got)[1]["source"] == "join"  # a resuming client drops these
    replay = objs(chat.say(bob2, f"/resume {epoch} {seen} {bob.origin}")[bob2.id])
    assert [(m["type"], m.get("text"), m.get("history")) for m in replay] == [
        ("msg", "one", "resume"),
        ("msg", "two", "resume"),
        ("msg", "three", "resume"),
        ("action", "four", "resume"),
        ("resumed", None, None),
    ]
    assert replay[-1] == {
        "type": "resumed",
        "epoch": epoch,
        "offset": 5,
        "count": 4,
        "reset": False,
    }
    # Up to date: nothing again; a wrong epoch: reset.
    assert objs(chat.say(bob2, f"/resume {epoch} 5")[bob2.id])[0]["count"] == 0
    assert objs(chat.say(bob2, "/resume 0123 6")[bob2.id])[0]["reset"] is True


def test_resume_says_plainly_what_retention_removed(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    chat = Chat(path)
    alice, _ = chat.join("alice")
    chat.say(alice, *(f"line {i}" for i in range(1, 11)))
    chat.close()
    store = SQLiteStore.open(path, max_lines=3)
    while store.trim(2e9, 100):
        pass
    chat.journal = Journal(store)
    chat.room = Room(clock=lambda: chat.now, wall=lambda: chat.now, history=chat.journal)
    bob, _ = chat.join("bob", Mode.TEXT)
    text = chat.say(bob, f"/resume {chat.journal.epoch} 2")[bob.id]
    assert text[0] == b"! history before 2023-11-14 22:13 is not available"
    assert text[1:] == [
        b"[2023-11-14 22:13:28] <alice> line 8",
        b"[2023-11-14 22:13:29] <alice> line 9",
        b"[2023-11-14 22:13:30] <alice> line 10",
        b"* resumed: 3 missed lines",
    ]
    chat.close()


def test_offsets_continue_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    chat = Chat(path)
    alice, _ = chat.join("alice")
    chat.say(alice, "a", "b")
    chat.close()
    chat = Chat(path)
    bob, _ = chat.join("bob")
    alice, _ = chat.join("alice")
    got = objs(chat.say(alice, "c")[bob.id])
    assert [(m["id"], m["text"]) for m in got if m["type"] == "msg"] == [(3, "c")]
    chat.close()
