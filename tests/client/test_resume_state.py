"""The client's resume logic (ChatState.receive), sans-I/O: events in, replies and display out."""

from __future__ import annotations

import json
from typing import Any

from mtlschat.client.protocol import ChatState, Event, parse_line


def ev(**data: Any) -> Event:
    return parse_line(json.dumps(data))


def welcome(epoch: str = "e1", offset: int = 10, origin: int = 7) -> Event:
    return ev(type="welcome", name="bob", online=["bob"], resume={
        "epoch": epoch, "offset": offset, "origin": origin})  # fmt: skip


def msg(ident: int, history: str | None = None) -> Event:
    data: dict[str, Any] = {
        "type": "msg",
        "id": ident,
        "ts": 1.0,
        "from": "alice",
        "text": str(ident),
    }
    if history:
        data["history"] = history
    return ev(**data)


def shown_ids(state: ChatState, *events: Event) -> list[int]:
    out: list[int] = []
    for e in events:
        _, shown = state.receive(e)
        out += [int(s.data["id"]) for s in shown if s.type == "msg"]
    return out


def test_first_connect_shows_the_join_history_and_live_lines() -> None:
    state = ChatState()
    replies, shown = state.receive(welcome())
    assert replies == [] and [s.type for s in shown] == ["welcome"]
    assert shown_ids(state, msg(9, "join"), msg(10, "join"), msg(11)) == [9, 10, 11]
    assert state.offset == 11 and state.epoch == "e1"


def test_a_reconnect_resumes_and_shows_each_line_once_in_order() -> None:
    state = ChatState()
    state.receive(welcome(origin=7))
    shown_ids(state, msg(11), msg(12))
    replies, _ = state.receive(welcome(offset=15, origin=8))
    assert replies == ["/resume e1 12 7"]  # our earlier session's lines are not replayed
    # The new session's join history is dropped, a live line waits for the recovery to end.
    assert shown_ids(state, msg(14, "join"), msg(15, "join"), msg(16)) == []
    assert shown_ids(state, msg(13, "resume"), msg(14, "resume"), msg(15, "resume")) == [13, 14, 15]
    _, shown = state.receive(ev(type="resumed", epoch="e1", offset=15, count=3, reset=False))
    assert [s.type for s in shown] == ["resumed", "msg"] and shown[1].data["id"] == 16
    assert shown_ids(state, msg(17)) == [17]


def test_a_line_the_recovery_already_had_is_not_shown_twice() -> None:
    state = ChatState()
    state.receive(welcome())
    state.receive(welcome(offset=12, origin=9))  # resuming from 10
    assert shown_ids(state, msg(12), msg(11, "resume"), msg(12, "resume")) == [11, 12]
    _, shown = state.receive(ev(type="resumed", epoch="e1", offset=12, count=2, reset=False))
    assert [s.type for s in shown] == ["resumed"]  # the held 12 was in the replay


def test_a_new_epoch_is_said_plainly_and_starts_over() -> None:
    state = ChatState()
    state.receive(welcome())
    shown_ids(state, msg(11))
    replies, shown = state.receive(welcome(epoch="e2", offset=0))
    assert replies == []
    assert [(s.type, s.local) for s in shown] == [("welcome", False), ("error", True)]
    assert "history was reset" in shown[1].text("text")
    assert state.epoch == "e2" and state.offset == 0
    assert shown_ids(state, msg(1)) == [1]


def test_an_older_server_without_resume_goes_live() -> None:
    state = ChatState()
    state.receive(welcome())
    state.receive(welcome(offset=10))
    assert shown_ids(state, msg(11)) == []  # held while resuming
    _, shown = state.receive(ev(type="error", code="unknown_command", text="unknown command"))
    assert [s.type for s in shown] == ["error", "msg"]
    plain = ChatState()
    assert (
        plain.receive(ev(type="welcome", name="bob", online=[]))[0] == []
    )  # no history: no resume
