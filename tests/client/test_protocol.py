"""The client's sans-I/O pieces: parsing, state, local echo, rendering, addresses, backoff."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prompt_toolkit.formatted_text import fragment_list_to_text

from mtlschat.backoff import Backoff
from mtlschat.client.protocol import ChatState, Event, clean, is_quit, local_echo, parse_line
from mtlschat.client.render import name_colour, render_plain, render_styled


def ev(**fields: object) -> Event:
    return parse_line(json.dumps(fields))


def test_parse_line() -> None:
    assert parse_line('{"type": "msg", "from": "bob", "text": "hi"}\n').type == "msg"
    assert parse_line("* not json").type == "raw"
    assert parse_line('["type"]').type == "raw"
    assert parse_line('{"type": 3}').type == "raw"
    odd = parse_line('{"type": "msg", "from": 7, "text": null, "extra": 1}')
    assert odd.text("from") == "7"  # wrong types degrade, never raise


def _printable(text: str) -> bool:
    """No control character (escape, newline, ...), bidi override or line separator."""
    return not any(
        unicodedata.category(ch) in ("Cc", "Cs") or ch in "\u2028\u2029\u202e\u2066" for ch in text
    )


def _assert_renders_safely(event: Event) -> list[str]:
    """Render ``event`` both ways; every piece must be safe to print. The plain lines."""
    plain = render_plain(event, timestamps=True)
    assert all(_printable(line) for line in plain), plain
    styled = render_styled(event, "alice")
    if styled is not None:
        # A multi-line notice is indented under its timestamp: the only newlines allowed.
        assert _printable(fragment_list_to_text(styled).replace("\n   ", "")), styled
    return plain


@example("\x1b]0;owned\x07 \u202e drow")
@example('{"type": "msg", "from": "\\u001b[2J", "text": "a\\nb"}')
@given(st.text())
def test_anything_from_the_server_renders_as_safe_lines(line: str) -> None:
    event = parse_line(line)
    plain = _assert_renders_safely(event)
    if event.type == "raw":  # not a JSON event: shown as it came, cleaned
        assert plain == [clean(line.rstrip("\r\n"))]


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text())
_types = st.sampled_from(
    ["welcome", "msg", "action", "dm", "join", "leave", "who", "info", "error", "ping", "bye", "x"]
)


@example("msg", {"ts": float("nan")})
@example("join", {"ts": 10**30, "name": 5})
@given(
    _types,
    st.dictionaries(
        st.sampled_from(["name", "online", "from", "to", "text", "ts", "reason", "code"]),
        st.one_of(_values, st.lists(_values, max_size=3)),
    ),
)
def test_any_json_event_renders_and_updates_state_without_raising(
    kind: str, fields: dict[str, object]
) -> None:
    event = parse_line(json.dumps({**fields, "type": kind}))
    _assert_renders_safely(event)
    replies = ChatState().apply(event)
    assert all(isinstance(reply, str) and "\n" not in reply for reply in replies), replies


@example("lone \ud800 surrogate, \u2028 separator, \x1b[31m red")
@given(st.text())
def test_clean_leaves_no_control_characters(text: str) -> None:
    out = clean(text)
    assert "\x1b" not in out and "\n" not in out and "\r" not in out and "\u202e" not in out
    out.encode("utf-8")  # printable: no lone surrogates
    assert clean("tab\there") == "tab here"


def test_chat_state_tracks_who_is_online_and_answers_pings() -> None:
    state = ChatState()
    assert state.apply(ev(type="welcome", name="alice", online=["alice", "bob"])) == []
    assert state.me == "alice"
    state.apply(ev(type="join", ts=1, name="Carol"))
    state.apply(ev(type="leave", ts=2, name="BOB", reason="quit"))
    assert state.online == ["alice", "Carol"]
    state.apply(ev(type="who", online=["alice", "dave"]))
    assert state.online == ["alice", "dave"]
    assert state.apply(ev(type="ping", ts=3)) == ["/pong"]
    state.apply(ev(type="bye", reason="server shutting down"))
    assert state.bye_reason == "server shutting down"


def test_local_echo() -> None:
    mine = local_echo("hello", "alice", 5.0)
    assert mine is not None and mine.local
    assert render_plain(mine) == ["<alice> hello"]
    slash = local_echo("//etc/passwd is a path", "alice", 5.0)
    assert slash is not None and slash.text("text") == "/etc/passwd is a path"
    action = local_echo("/me waves", "alice", 5.0)
    assert action is not None and render_plain(action) == ["* alice waves"]
    assert local_echo("/msg bob hi", "alice", 5.0) is None  # the server echoes DMs
    assert local_echo("/who", "alice", 5.0) is None
    assert local_echo("   ", "alice", 5.0) is None
    assert is_quit("/QUIT bye") and is_quit("/quit") and not is_quit("/quitter")


@pytest.mark.parametrize(
    ("fields", "lines"),
    [
        (
            {"type": "welcome", "name": "al", "online": ["al", "bo"]},
            ["* welcome al. online: al, bo"],
        ),
        (
            {"type": "welcome", "name": "al", "online": ["al", "bo"], "online_count": 5},
            ["* welcome al. online: al, bo and 3 more (/who lists everyone)"],
        ),
        ({"type": "msg", "id": 1, "ts": 0, "from": "bo", "text": "hi"}, ["<bo> hi"]),
        ({"type": "action", "id": 2, "ts": 0, "from": "bo", "text": "waves"}, ["* bo waves"]),
        (
            {"type": "dm", "id": 3, "ts": 0, "from": "bo", "to": "al", "text": "psst"},
            ["[dm] <bo> -> al: psst"],
        ),
        ({"type": "join", "ts": 0, "name": "cy"}, ["* cy joined"]),
        ({"type": "leave", "ts": 0, "name": "cy", "reason": "quit"}, ["* cy left (quit)"]),
        ({"type": "who", "online": ["al"]}, ["* online: al"]),
        ({"type": "info", "text": "/who\n/quit"}, ["* /who", "* /quit"]),
        (
            {"type": "error", "code": "unknown_user", "text": "no such user zed"},
            ["! no such user zed"],
        ),
        ({"type": "bye", "reason": "idle timeout"}, ["* bye: idle timeout"]),
        ({"type": "ping", "ts": 0}, []),
        ({"type": "from_the_future", "x": 1}, []),
    ],
)
def test_render_plain(fields: dict[str, object], lines: list[str]) -> None:
    assert render_plain(ev(**fields)) == lines


def test_render_plain_timestamps_and_hostile_text() -> None:
    line = render_plain(
        ev(type="msg", ts=0, **{"from": "bo", "text": "a\x1b[2Jb"}), timestamps=True
    )
    assert len(line) == 1 and line[0].startswith("[") and "\x1b" not in line[0]


def test_render_styled() -> None:
    msg = render_styled(ev(type="msg", ts=0, **{"from": "bob", "text": "hi"}), "alice")
    assert msg is not None and fragment_list_to_text(msg).endswith("<bob> hi")
    assert any(name_colour("bob") in style for style, _ in msg)
    dm = render_styled(ev(type="dm", ts=0, to="alice", text="psst", **{"from": "bob"}), "alice")
    assert dm is not None and any("dm" in style for style, _ in dm)
    assert "private" in fragment_list_to_text(dm) and "from bob" in fragment_list_to_text(dm)
    sent = render_styled(ev(type="dm", ts=0, to="bob", text="x", **{"from": "alice"}), "alice")
    assert sent is not None and "to bob" in fragment_list_to_text(sent)
    joined = render_styled(ev(type="join", ts=0, name="carol"), "alice")
    assert joined is not None and any("notice" in style for style, _ in joined)
    assert render_styled(ev(type="ping", ts=0), "alice") is None


def test_name_colours_are_stable_and_case_insensitive() -> None:
    assert name_colour("alice") == name_colour("Alice") == name_colour("alice")
    assert len({name_colour(f"user{i}") for i in range(50)}) > 4


def test_backoff_grows_caps_jitters_and_resets() -> None:
    backoff = Backoff(initial=0.5, factor=2, cap=4, rand=lambda: 0.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.5
    jittered = Backoff(initial=1, rand=lambda: 1.0)
    assert jittered.next() == 0.75
