"""The command table and each command, bytes in / bytes out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtlschat.chat.commands import COMMANDS, Command
from mtlschat.chat.room import Mode

if TYPE_CHECKING:
    from conftest import Harness


def test_one_table_entry_per_command() -> None:
    assert set(COMMANDS) == {
        "who",
        "msg",
        "me",
        "help",
        "quit",
        "pong",
        "mode",
        "history",
        "search",
        "resume",
        "topic",
        "kick",
        "ban",
        "unban",
        "bans",
        "mute",
        "unmute",
    }
    for name, command in COMMANDS.items():
        assert isinstance(command, Command)
        assert command.usage.startswith(f"/{name}")
        assert command.help


def test_who(h: Harness) -> None:
    alice = h.join("alice")
    h.join("bob")
    h.take(alice)
    h.send(alice, "/who")
    h.flush()
    assert h.take(alice) == [{"type": "who", "online": ["alice", "bob"]}]


def test_commands_are_case_insensitive(h: Harness) -> None:
    alice = h.join("alice")
    h.send(alice, "/WHO", "/Who")
    h.flush()
    assert [e["type"] for e in h.take(alice)] == ["who", "who"]


def test_unknown_command_error_goes_to_sender_only(h: Harness) -> None:
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    h.send(alice, "/frobnicate now")
    h.flush()
    assert h.take(alice) == [
        {
            "type": "error",
            "code": "unknown_command",
            "text": "unknown command /frobnicate (try /help)",
        }
    ]
    assert h.take(bob) == []


def test_msg_reaches_only_the_target_and_is_echoed(h: Harness) -> None:
    alice, bob, carol = h.join("alice"), h.join("bob"), h.join("carol")
    h.take(alice), h.take(bob)
    h.send(alice, "/msg BOB  psst, over here ")
    h.flush()
    dm = {
        "type": "dm",
        "id": 1,
        "ts": h.clock.now,
        "from": "alice",
        "to": "bob",
        "text": "psst, over here",
    }
    assert h.take(bob) == [dm]
    assert h.take(alice) == [dm]
    assert h.take(carol) == []


def test_msg_to_every_session_of_the_target_and_of_the_sender(h: Harness) -> None:
    a1, b1 = h.join("alice"), h.join("bob")
    a2, b2 = h.join("alice"), h.join("bob")
    for s in (a1, b1):
        h.take(s)
    h.send(a1, "/msg bob hi")
    h.flush()
    for s in (a1, a2, b1, b2):
        assert [e["type"] for e in h.take(s)] == ["dm"]


def test_msg_to_yourself_arrives_once_per_session(h: Harness) -> None:
    alice = h.join("alice")
    h.send(alice, "/msg alice note to self")
    h.flush()
    assert [e["text"] for e in h.take(alice)] == ["note to self"]


def test_msg_errors(h: Harness) -> None:
    alice = h.join("alice")
    h.send(alice, "/msg nobody hello", "/msg", "/msg bob", "/msg bob    ")
    h.flush()
    got = h.take(alice)
    assert [e["code"] for e in got] == ["unknown_user", "bad_usage", "bad_usage", "bad_usage"]
    assert got[1]["text"] == "usage: /msg NAME text"


def test_me(h: Harness) -> None:
    alice, bob = h.join("alice", Mode.TEXT), h.join("bob")
    h.take_bytes(alice)
    h.send(bob, "/me waves", "/me")
    h.flush()
    (line,) = h.take_text(alice)
    assert line.endswith("] * bob waves")
    assert [e["code"] for e in h.take(bob)] == ["bad_usage"]


def test_help_lists_what_people_use_not_protocol_plumbing(h: Harness) -> None:
    alice = h.join("alice")
    h.send(alice, "/help")
    h.flush()
    text = "\n".join(e["text"] for e in h.take(alice))
    for command in COMMANDS.values():
        assert (command.usage in text) is not command.hidden
        assert (command.help in text) is not command.hidden
    assert "/pong" not in text and "/mode" not in text  # in docs/protocol.md only


def test_quit_with_and_without_reason(h: Harness) -> None:
    alice, bob, carol = h.join("alice"), h.join("bob"), h.join("carol")
    h.take(alice), h.take(bob)
    h.send(bob, "/quit gone fishing", "this line is never sent")
    h.send(carol, "/QUIT")
    h.flush()
    assert h.take(bob) == [{"type": "bye", "reason": "quit"}]
    assert bob.closing == "quit" and carol.closing == "quit"
    leaves = h.take(alice)
    assert [(e["name"], e["reason"]) for e in leaves] == [
        ("bob", "quit: gone fishing"),
        ("carol", "quit"),
    ]
    assert h.room.online() == ["alice"]


def test_pong_is_silent(h: Harness) -> None:
    alice = h.join("alice")
    h.send(alice, "/pong")
    assert h.flush() == []


def test_mode_switches_output_mid_round(h: Harness) -> None:
    alice, bob = h.join("alice", Mode.TEXT), h.join("bob")
    h.take_bytes(alice)
    h.send(bob, "before")
    h.send(alice, "/mode json")
    h.send(bob, "after")
    h.flush()
    lines = h.take_text(alice)
    assert lines[0].endswith("<bob> before")
    assert lines[1] == '{"type":"info","text":"mode: json"}'
    assert '"text":"after"' in lines[2]
    h.send(alice, "/mode TEXT", "/mode xml")
    h.flush()
    assert h.take_text(alice) == ["* mode: text", "! usage: /mode text|json"]
    assert alice.mode is Mode.TEXT


def test_mode_switch_before_join_round_is_flushed(h: Harness) -> None:
    # A fresh session switching mode in its first round still gets its welcome (in the old mode).
    alice = h.open("alice", Mode.TEXT)
    h.send(alice, "/mode json")
    h.flush()
    welcome, info = h.take_text(alice)
    assert welcome.startswith("* welcome alice")
    assert info == '{"type":"info","text":"mode: json"}'


def test_msg_accepts_any_whitespace_after_the_name(h: Harness) -> None:
    alice, bob = h.join("alice"), h.join("bob")
    h.send(alice, "/msg bob\tover tabs")
    h.flush()
    assert [e["text"] for e in h.take(bob)] == ["over tabs"]


def test_echoed_user_input_in_errors_is_cleaned_and_short(h: Harness) -> None:
    alice = h.join("alice", Mode.TEXT)
    h.send(alice, "/\x1b[2J" + "z" * 500, "/msg \x1bnobody hi")
    h.flush()
    unknown, no_user = h.take_text(alice)
    assert "\x1b" not in unknown + no_user
    assert len(unknown) < 80
    assert no_user == "! no such user online: \ufffdnobody"


def test_durations() -> None:
    from mtlschat.chat.moderation import format_duration, parse_duration

    assert parse_duration("30s") == 30 and parse_duration("10m") == 600
    assert parse_duration("2H") == 7200 and parse_duration("7d") == 7 * 86400
    assert parse_duration("1w") == 7 * 86400 and parse_duration("1.5h") == 5400
    assert parse_duration("spam") is None and parse_duration("10") is None
    assert format_duration(7200) == "2h" and format_duration(5400) == "90m"
