"""The room, driven purely by bytes in / bytes out with a fake clock."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from mtlschat.chat.room import Mode, Refusal, RoomSettings
from mtlschat.chat.wire import Lines

if TYPE_CHECKING:  # the harness class lives in conftest.py; fixtures hand it out
    from conftest import Harness


def test_welcome_join_and_online_list(h: Harness) -> None:
    alice = h.join("alice")
    bob = h.open("bob", Mode.JSON)
    h.flush()
    (welcome,) = h.take(bob)
    assert welcome["type"] == "welcome"
    assert welcome["name"] == "bob"
    assert welcome["online"] == ["alice", "bob"]
    assert welcome["online_count"] == 2
    assert welcome["server"].startswith("mtlschat")
    assert welcome["limits"] == {
        "max_line": 2048,
        "rate": 5.0,
        "burst": 20,
        "keepalive": 60.0,
        "idle_timeout": 180.0,
    }
    assert h.take(alice) == [{"type": "join", "ts": h.clock.now, "name": "bob"}]


def test_chat_line_goes_to_everyone_but_the_sender(h: Harness) -> None:
    alice, bob, carol = h.join("alice"), h.join("bob"), h.join("carol")
    h.take(alice), h.take(bob)
    h.send(alice, "hello world")
    h.flush()
    assert h.take(alice) == []
    for s in (bob, carol):
        assert h.take(s) == [
            {"type": "msg", "id": 1, "ts": h.clock.now, "from": "alice", "text": "hello world"}
        ]


def test_ids_strictly_increase_and_order_is_the_same_for_everyone(h: Harness) -> None:
    people = [h.join(n) for n in ("a1", "b2", "c3", "d4")]
    for s in people:
        h.take(s)
    for i in range(5):
        for s in people:
            h.send(s, f"{s.name} says {i}")
    h.send(people[0], "/me waves", "/msg b2 psst")
    h.flush()
    seen = {s.id: [ev["id"] for ev in h.take(s)] for s in people}
    all_ids = sorted({i for ids in seen.values() for i in ids})
    assert all_ids == list(range(1, 23))
    for s in people:
        ids = seen[s.id]
        assert ids == sorted(ids)
        assert len(ids) == len(set(ids))
    # Everyone but the sender got each public line: same relative order everywhere.
    assert len(seen[people[1].id]) == 15 + 1 + 1  # others' lines, the action, the dm


def test_own_line_skipped_in_the_middle_of_a_round(h: Harness) -> None:
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    h.send(bob, "one")
    h.send(alice, "two")
    h.send(bob, "three")
    h.send(alice, "four")
    h.flush()
    assert [e["text"] for e in h.take(alice)] == ["one", "three"]
    assert [e["text"] for e in h.take(bob)] == ["two", "four"]


def test_non_senders_share_the_same_bytes_object(h: Harness) -> None:
    alice = h.join("alice")
    others = [h.join(f"u{i}") for i in range(5)]
    h.send(alice, "x")
    ready = h.room.flush()
    outputs = [s.take_output() for s in ready if s in others]
    assert len(outputs) == 5
    assert all(out is outputs[0] for out in outputs)


def test_both_modes_in_one_room(h: Harness) -> None:
    alice = h.join("alice", Mode.TEXT)
    bob = h.join("bob", Mode.JSON)
    assert h.take_text(alice) == ["* bob joined"]
    h.send(alice, "hi bob")
    h.send(bob, "hi alice")
    h.flush()
    assert h.take(bob)[0]["text"] == "hi bob"
    (line,) = h.take_text(alice)
    assert line.endswith("] <bob> hi alice")
    assert line.startswith("[") and line[9] == "]"


def test_text_welcome(make_harness: type[Harness]) -> None:
    h = make_harness()
    h.join("bob")
    alice = h.open("alice", Mode.TEXT)
    h.flush()
    (line,) = h.take_text(alice)
    assert line.startswith("* welcome alice. online: alice, bob")


def test_leave_is_announced_with_reason(h: Harness) -> None:
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    h.room.end(bob, "connection lost", gone=True)
    assert h.flush() == [alice]
    assert h.take(alice) == [
        {"type": "leave", "ts": h.clock.now, "name": "bob", "reason": "connection lost"}
    ]
    assert h.room.online() == ["alice"]
    h.room.end(bob, "again", gone=True)  # idempotent
    assert h.flush() == []


def test_closed_session_is_never_returned_by_flush(h: Harness) -> None:
    alice, bob = h.join("alice"), h.join("bob")
    h.send(alice, "hello")
    h.send(bob, "/who")
    h.room.end(bob, "gone", gone=True)
    ready = h.flush()
    assert bob not in ready
    assert bob.take_output() == b""


def test_session_opened_mid_round_gets_welcome_first_and_only_later_lines(h: Harness) -> None:
    alice = h.join("alice")
    h.send(alice, "before")
    bob = h.open("bob", Mode.JSON)
    h.send(alice, "after")
    h.flush()
    got = h.take(bob)
    assert [e["type"] for e in got] == ["welcome", "msg"]
    assert got[1]["text"] == "after"
    assert [e["type"] for e in h.take(alice)] == ["join"]


def test_multiple_sessions_per_name(h: Harness) -> None:
    laptop, carol = h.join("alice"), h.join("carol")
    h.take(laptop)
    phone = h.join("Alice")  # same name, case-insensitively
    assert h.take(carol) == []  # no second "joined"
    h.send(phone, "/who")
    h.flush()
    assert h.take(phone) == [{"type": "who", "online": ["alice", "carol"]}]
    h.send(laptop, "from the laptop")
    h.flush()
    assert [e["text"] for e in h.take(phone)] == ["from the laptop"]
    assert h.take(laptop) == []
    assert [e["text"] for e in h.take(carol)] == ["from the laptop"]
    h.room.end(laptop, "closed", gone=True)
    h.flush()
    assert h.take(carol) == []  # alice is still here
    h.room.end(phone, "closed", gone=True)
    h.flush()
    assert [e["type"] for e in h.take(carol)] == ["leave"]


def test_kick_says_why_and_marks_closing(h: Harness) -> None:
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    h.send(alice, "last words")
    h.room.end(bob, "certificate revoked")
    h.send(alice, "after the kick")
    h.flush()
    assert bob.closing == "certificate revoked"
    assert h.take(bob) == [
        {"type": "msg", "id": 1, "ts": h.clock.now, "from": "alice", "text": "last words"},
        {"type": "bye", "reason": "certificate revoked"},
    ]
    assert [e["type"] for e in h.take(alice)] == ["leave"]
    h.send(bob, "ignored")  # a closing session's input is ignored
    h.room.end(bob, "twice")
    assert h.flush() == []


def test_shutdown_says_bye_to_everyone(h: Harness) -> None:
    people = [h.join(n, mode) for n, mode in (("a", Mode.TEXT), ("b", Mode.JSON), ("c", Mode.JSON))]
    for s in people:
        h.take_bytes(s)
    h.room.shutdown("server shutting down")
    assert set(h.flush()) == set(people)
    assert h.take_text(people[0]) == ["* bye: server shutting down"]
    for s in people[1:]:
        assert h.take(s) == [{"type": "bye", "reason": "server shutting down"}]
    assert all(s.closing == "server shutting down" for s in people)


def test_bad_name_is_refused(h: Harness) -> None:
    s = h.open("-evil\x1b[2J", Mode.JSON)
    h.flush()
    error, bye = h.take(s)
    assert error["type"] == "error" and error["code"] == "bad_name"
    assert bye == {"type": "bye", "reason": "bad name"}
    assert s.closing == "bad name"
    assert s.refused is Refusal.BAD_NAME  # typed, for the driver to log
    assert h.room.counters.refused == {"bad_name": 1}
    assert h.room.online() == []


def test_an_admitted_session_is_not_refused(h: Harness) -> None:
    assert h.join("alice").refused is None
    assert h.room.counters.refused == {}


def test_end_is_one_door_and_the_first_reason_stays(h: Harness) -> None:
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    h.room.end(bob, "idle timeout")
    h.room.end(bob, "certificate revoked")  # already ending: no second bye, same reason
    h.flush()
    assert h.take(bob) == [{"type": "bye", "reason": "idle timeout"}]
    assert [(e["type"], e["reason"]) for e in h.take(alice)] == [("leave", "idle timeout")]
    assert len(h.room.sessions()) == 2  # closing: still the room's until the transport is gone
    h.room.end(bob, "closed", gone=True)  # the driver closed the transport
    assert bob.closing == "idle timeout"
    assert h.room.sessions() == [alice]
    assert h.room.counters.sessions_closed == 1
    assert h.flush() == []  # no second leave


def test_bad_name_gets_no_broadcasts_of_its_round(h: Harness) -> None:
    alice, bob = h.join("alice"), h.join("bob")
    bad = h.open("bad name!", Mode.JSON)
    h.send(alice, "not for refused clients")
    h.flush()
    assert [m["type"] for m in h.take(bad)] == ["error", "bye"]
    assert [m["text"] for m in h.take(bob)] == ["not for refused clients"]


def test_blank_and_whitespace_lines_are_ignored(h: Harness) -> None:
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    h.room.feed(alice, b"\n\r\n   \n\t\n")
    assert h.flush() == []
    assert h.take(bob) == []


def test_double_slash_sends_a_line_starting_with_slash(h: Harness) -> None:
    alice, bob = h.join("alice"), h.join("bob")
    h.send(alice, "//etc/passwd is a path", "//")
    h.flush()
    assert [e["text"] for e in h.take(bob)] == ["/etc/passwd is a path", "/"]


def test_control_characters_are_neutralised(h: Harness) -> None:
    alice, bob = h.join("alice", Mode.TEXT), h.join("bob")
    h.take_bytes(alice)
    h.send(bob, "red \x1b[31malert\x07 tab\tok é 漢字 🙂")
    h.flush()
    (line,) = h.take_text(alice)
    assert "\x1b" not in line and "\x07" not in line
    assert line.endswith("<bob> red \ufffd[31malert\ufffd tab\tok é 漢字 🙂")


def test_framing_errors_go_to_that_client_only(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(max_line=10))
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    h.room.feed(alice, b"x" * 50 + b"\nok\n\xff\xfe\n")
    h.flush()
    assert [(e["type"], e.get("code")) for e in h.take(alice)] == [
        ("error", "line_too_long"),
        ("error", "bad_utf8"),
    ]
    assert [e["text"] for e in h.take(bob)] == ["ok"]
    assert h.room.counters.errors == 2


def test_any_split_of_input_gives_the_same_result(make_harness: type[Harness]) -> None:
    stream = b"hello\r\n/me waves\n/who\n/msg bob psst\nbye\n"
    results = []
    for step in (1, 2, 3, 7, len(stream)):
        h = make_harness()
        alice, bob = h.join("alice"), h.join("bob")
        h.take(alice)
        for i in range(0, len(stream), step):
            h.room.feed(alice, stream[i : i + step])
        h.flush()
        results.append((h.take_bytes(alice), h.take_bytes(bob)))
    assert all(r == results[0] for r in results)


def test_a_command_between_lines_of_one_read_keeps_its_place(h: Harness) -> None:
    # The lines of one read are one event, until a command: what it queues (a DM here) must
    # come after the lines before it and before the lines after it, for everyone.
    alice, bob, carol = h.join("alice"), h.join("bob"), h.join("carol")
    h.flush()
    h.take(bob), h.take(carol)
    before = h.room.counters.deliveries
    h.send(alice, "one", "two", "/msg bob psst", "three", "/me waves", "four", "five")
    h.flush()
    assert [(e["type"], e["text"]) for e in h.take(bob)] == [
        ("msg", "one"), ("msg", "two"), ("dm", "psst"), ("msg", "three"), ("action", "waves"),
        ("msg", "four"), ("msg", "five"),
    ]  # fmt: skip
    seen = h.take(carol)
    assert [e["text"] for e in seen] == ["one", "two", "three", "waves", "four", "five"]
    assert [e["id"] for e in seen] == [1, 2, 4, 5, 6, 7]  # (the DM took id 3)
    # Counted line by line: 6 lines to each of bob and carol, the DM to bob and its echo.
    assert h.room.counters.deliveries - before == 6 + 6 + 2


def test_counters(h: Harness) -> None:
    alice, bob, _ = h.join("alice"), h.join("bob"), h.join("carol")
    h.send(alice, "one", "two", "/nope")
    h.send(bob, "/msg alice hi")
    h.flush()
    c = h.room.counters
    assert c.sessions_opened == 3
    assert c.messages == 3
    assert c.errors == 1
    # the joins (bob->alice; carol->alice,bob), 2 lines x 2 peers, the dm to alice and its echo,
    # plus the three welcomes and the error
    assert c.deliveries == 3 + 4 + 2 + 3 + 1


def test_each_broadcast_is_encoded_once_per_mode_in_use(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"text": 0, "json": 0}
    real_text, real_json = Lines.text, Lines.json

    def count_text(self: Lines) -> bytes:
        calls["text"] += 1
        return real_text(self)

    def count_json(self: Lines) -> bytes:
        calls["json"] += 1
        return real_json(self)

    monkeypatch.setattr(Lines, "text", count_text)
    monkeypatch.setattr(Lines, "json", count_json)
    people = [h.join(f"j{i}") for i in range(30)]
    for s in people[:10]:
        h.send(s, "hi", "there")  # (one read: its two lines are one event)
    h.flush()
    assert calls == {"text": 0, "json": 10}  # nobody is in text mode: never encoded as text
    h.join("reader", Mode.TEXT)
    h.send(people[0], "once more")
    h.flush()
    assert calls == {"text": 1, "json": 11}


def test_session_has_no_instance_dict(h: Harness) -> None:
    s = h.join("alice")
    assert not hasattr(s, "__dict__")


def test_online_list_stays_sorted_as_people_come_and_go(h: Harness) -> None:
    people = {n: h.join(n) for n in ("mallory", "Bob", "alice", "zed", "carol")}
    assert h.room.online() == sorted(people)
    h.room.end(people["alice"], "quit", gone=True)
    h.room.end(people["zed"], "quit", gone=True)
    h.join("dave")
    assert h.room.online() == ["Bob", "carol", "dave", "mallory"]


def test_welcome_lists_the_first_names_and_the_count(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(welcome_names=3))
    for n in ("e5", "d4", "c3", "b2"):
        h.join(n)
    text = h.open("a1", Mode.TEXT)
    js = h.open("f6", Mode.JSON)
    h.flush()
    assert h.take_text(text)[0].startswith(
        "* welcome a1. online: a1, b2, c3 and 2 more (/who lists everyone)"
    )
    (welcome,) = h.take(js)
    assert welcome["online"] == ["a1", "b2", "c3"]
    assert welcome["online_count"] == 6
    h.send(js, "/who")
    h.flush()
    assert h.take(js) == [{"type": "who", "online": ["a1", "b2", "c3", "d4", "e5", "f6"]}]


def test_join_and_leave_are_not_announced_above_the_limit(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(announce_limit=3))
    alice, bob = h.join("alice"), h.join("bob")
    assert [ev["name"] for ev in h.take(alice)] == ["bob"]
    carol = h.join("carol")  # 3 members: still announced
    assert [ev["type"] for ev in h.take(alice)] == ["join"]
    h.join("dave")  # 4 members: above the limit, silence
    h.room.end(bob, "quit", gone=True)  # leaving while 4 are online: silence too
    h.flush()
    assert h.take(alice) == []
    h.room.end(carol, "quit", gone=True)  # 2 left: announced again
    h.flush()
    assert [(ev["type"], ev["name"]) for ev in h.take(alice)] == [("leave", "carol")]
