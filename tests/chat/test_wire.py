"""Wire encoding: every message type in both modes; the hand-built JSON equals json.dumps."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtlschat.chat.wire import (
    ALPN_JSON,
    ALPN_TEXT,
    Action,
    Bye,
    Dm,
    Error,
    Event,
    Info,
    Join,
    Leave,
    Lines,
    Mode,
    Msg,
    Ping,
    Welcome,
    Who,
    clean_text,
)

TS = 1_700_000_000.5  # 22:13:20.5 UTC

EVENTS: list[tuple[Event, str, dict[str, object]]] = [
    (
        Welcome("alice", ["alice", "bob"], 2, "mtlschat 0.1.0", 2048, 5.0, 20, 60.0, 180.0),
        "* welcome alice. online: alice, bob (mtlschat 0.1.0; /help for commands)",
        {
            "type": "welcome",
            "name": "alice",
            "online": ["alice", "bob"],
            "online_count": 2,
            "server": "mtlschat 0.1.0",
            "limits": {
                "max_line": 2048,
                "rate": 5.0,
                "burst": 20,
                "keepalive": 60.0,
                "idle_timeout": 180.0,
            },
        },
    ),
    (
        Msg(7, TS, "bob", "hello"),
        "[22:13:20] <bob> hello",
        {"type": "msg", "id": 7, "ts": TS, "from": "bob", "text": "hello"},
    ),
    (
        Action(8, TS, "bob", "waves"),
        "[22:13:20] * bob waves",
        {"type": "action", "id": 8, "ts": TS, "from": "bob", "text": "waves"},
    ),
    (
        Dm(9, TS, "bob", "alice", "psst"),
        "[22:13:20] [dm] <bob> -> alice: psst",
        {"type": "dm", "id": 9, "ts": TS, "from": "bob", "to": "alice", "text": "psst"},
    ),
    (Join(TS, "carol"), "* carol joined", {"type": "join", "ts": TS, "name": "carol"}),
    (
        Leave(TS, "carol", "quit"),
        "* carol left (quit)",
        {"type": "leave", "ts": TS, "name": "carol", "reason": "quit"},
    ),
    (Who(["alice", "bob"]), "* online: alice, bob", {"type": "who", "online": ["alice", "bob"]}),
    (Info("commands:"), "* commands:", {"type": "info", "text": "commands:"}),
    (
        Error("unknown_command", "unknown command /foo (try /help)"),
        "! unknown command /foo (try /help)",
        {"type": "error", "code": "unknown_command", "text": "unknown command /foo (try /help)"},
    ),
    (
        Ping(TS),
        "* ping: any line (or /pong) keeps you connected",
        {"type": "ping", "ts": TS},
    ),
    (
        Bye("server shutting down"),
        "* bye: server shutting down",
        {"type": "bye", "reason": "server shutting down"},
    ),
]


@pytest.mark.parametrize(("event", "text", "obj"), EVENTS, ids=lambda v: type(v).__name__)
def test_both_encodings(event: Event, text: str, obj: dict[str, object]) -> None:
    assert event.text() == text.encode() + b"\n"
    assert event.encode(Mode.TEXT) == event.text()
    line = event.json()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == obj
    assert event.encode(Mode.JSON) == line


@given(body=st.text(max_size=50), ts=st.floats(0, 4e9), mid=st.integers(1, 2**53))
def test_hand_built_json_equals_json_dumps(body: str, ts: float, mid: int) -> None:
    def canonical(obj: dict[str, object]) -> bytes:
        return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    base = {"id": mid, "ts": ts, "from": "bob"}
    assert Msg(mid, ts, "bob", body).json() == canonical({"type": "msg", **base, "text": body})
    assert Action(mid, ts, "bob", body).json() == canonical(
        {"type": "action", **base, "text": body}
    )
    assert Dm(mid, ts, "bob", "al", body).json() == canonical(
        {"type": "dm", **base, "to": "al", "text": body}
    )


@given(
    kind=st.sampled_from(["msg", "action"]),
    bodies=st.lists(st.text(max_size=20).map(clean_text), min_size=1, max_size=6),
    ts=st.floats(0, 4e9),
    first=st.integers(1, 2**53),
)
def test_a_run_of_lines_is_its_lines_one_by_one(
    kind: str, bodies: list[str], ts: float, first: int
) -> None:
    run = Lines(kind, first, ts, "bob", bodies)
    one = Msg if kind == "msg" else Action
    singles = [one(first + i, ts, "bob", body) for i, body in enumerate(bodies)]
    assert run.text() == b"".join(ev.text() for ev in singles)
    assert run.json() == b"".join(ev.json() for ev in singles)


def test_text_clock_is_utc_hh_mm_ss() -> None:
    assert Msg(1, 0.0, "a", "x").text().startswith(b"[00:00:00]")
    assert Msg(1, 86399.99, "a", "x").text().startswith(b"[23:59:59]")
    assert Msg(1, 3600 * 25 + 61, "a", "x").text().startswith(b"[01:01:01]")


def test_modes() -> None:
    assert Mode.from_alpn(None) is Mode.TEXT
    assert Mode.from_alpn(ALPN_TEXT) is Mode.TEXT
    assert Mode.from_alpn(ALPN_JSON) is Mode.JSON
    assert Mode.from_alpn("h2") is Mode.TEXT
    assert Mode.parse("JSON") is Mode.JSON
    assert Mode.parse("text") is Mode.TEXT
    assert Mode.parse("xml") is None


REORDERING = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"


@given(st.text(max_size=40) | st.text(alphabet=f"ab\x1b{REORDERING}", max_size=20))
def test_clean_text_leaves_no_control_characters(text: str) -> None:
    cleaned = clean_text(text)
    assert len(cleaned) == len(text)
    assert not any((ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) < 0xA0 for c in cleaned)
    assert not any(c in REORDERING for c in cleaned)
    if text.isprintable():
        assert cleaned is text


@pytest.mark.parametrize("char", REORDERING)
def test_bidi_controls_and_separators_are_neutralised_in_both_modes(char: str) -> None:
    ev = Msg(1, TS, "alice", clean_text(f"evil{char}txt.exe"))
    assert ev.text().decode() == "[22:13:20] <alice> evil\ufffdtxt.exe\n"
    assert json.loads(ev.json())["text"] == "evil\ufffdtxt.exe"
