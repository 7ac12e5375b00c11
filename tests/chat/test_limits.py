"""Rate limiting (token bucket per name) and liveness (keepalive ping, idle timeout)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from mtlschat.chat.room import Mode, Refusal, Room, RoomSettings

from .conftest import FakeClock

if TYPE_CHECKING:
    from conftest import Harness


def test_a_paste_within_the_burst_goes_through(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(rate=5.0, burst=20))
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    h.send(alice, *(f"line {i}" for i in range(20)))
    h.flush()
    assert [e["text"] for e in h.take(bob)] == [f"line {i}" for i in range(20)]
    assert h.take(alice) == []


def test_over_the_burst_dropped_with_one_notice_per_second(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(rate=5.0, burst=20))
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    h.send(alice, *(f"line {i}" for i in range(30)))
    h.flush()
    assert len(h.take(bob)) == 20
    (notice,) = h.take(alice)
    assert notice["type"] == "error" and notice["code"] == "rate_limited"
    assert h.room.counters.rate_limited == 10
    # Half a second later: 2.5 tokens back, 2 lines pass, no second notice within the second.
    h.clock.advance(0.5)
    h.send(alice, "a", "b", "c", "d")
    h.flush()
    assert [e["text"] for e in h.take(bob)] == ["a", "b"]
    assert h.take(alice) == []
    # Over a second after the first notice: the next refusal is reported again.
    h.clock.advance(0.6)
    h.send(alice, *"efghijklmn")
    h.flush()
    assert len(h.take(bob)) == 3  # 0.5 left + 0.6 * 5 = 3.5 tokens
    assert [e["code"] for e in h.take(alice)] == ["rate_limited"]


def test_bucket_refills_but_never_beyond_the_burst(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(rate=1.0, burst=3))
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    h.clock.advance(3600)
    h.send(alice, *"abcde")
    h.flush()
    assert [e["text"] for e in h.take(bob)] == ["a", "b", "c"]


def test_the_bucket_is_per_name_not_per_session(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(rate=1.0, burst=2))
    laptop, phone, bob = h.join("alice"), h.join("alice"), h.join("bob")
    h.take(laptop), h.take(phone)
    h.send(laptop, "1", "2")
    h.send(phone, "3")
    h.flush()
    assert [e["text"] for e in h.take(bob)] == ["1", "2"]
    # the phone gets the laptop's lines (another session) and the notice for its own line
    assert [e.get("code") for e in h.take(phone)] == [None, None, "rate_limited"]


def test_commands_count_but_quit_and_pong_do_not(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(rate=1.0, burst=2))
    alice = h.join("alice")
    h.send(alice, "/who", "/who", "/who", "/pong", "/pong", "/quit")
    h.flush()
    assert [e["type"] for e in h.take(alice)] == ["who", "who", "error", "bye"]


def test_rate_zero_means_unlimited(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(rate=0, burst=1))
    alice, bob = h.join("alice"), h.join("bob")
    h.send(alice, *(str(i) for i in range(500)))
    h.flush()
    assert len(h.take(bob)) == 500


def test_keepalive_ping_then_idle_timeout(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(keepalive=60, idle_timeout=180))
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    start = h.clock.now
    h.clock.advance(59)
    h.room.tick()
    assert h.flush() == []
    h.send(bob, "/pong")  # bob stays active; alice says nothing from now on
    h.clock.advance(2)
    h.room.tick()
    h.flush()
    assert h.take(alice) == [{"type": "ping", "ts": start + 61}]
    assert h.take(bob) == []
    h.send(bob, "/pong")
    h.clock.advance(30)
    h.room.tick()
    assert h.flush() == []  # no second ping before another keepalive period
    h.send(bob, "/pong")
    h.clock.advance(30)
    h.room.tick()
    h.flush()
    assert [e["type"] for e in h.take(alice)] == ["ping"]
    h.send(bob, "still here")
    h.clock.advance(59)
    h.room.tick()  # 180 s of silence from alice
    h.flush()
    assert h.take(alice)[-2:] == [
        {"type": "msg", "id": 1, "ts": start + 121, "from": "bob", "text": "still here"},
        {"type": "bye", "reason": "idle timeout"},
    ]
    assert alice.closing == "idle timeout"
    assert [e["type"] for e in h.take(bob)] == ["leave"]


def test_any_line_resets_the_idle_clock(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(keepalive=10, idle_timeout=30))
    alice = h.join("alice")
    for _ in range(10):
        h.clock.advance(9)
        h.room.tick()
        h.room.feed(alice, b"\n")  # even a blank line is a sign of life
    assert h.flush() == []
    assert alice.closing is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_line": 0},
        {"rate": -1},
        {"burst": 0},
        {"keepalive": 0},
        {"idle_timeout": -5},
    ],
)
def test_settings_are_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RoomSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("junk", [b"\xff\xfe\n", b"/nosuchcommand\n", b"x" * 40 + b"\n"])
def test_a_flood_of_refused_lines_costs_its_sender_a_bounded_answer(
    make_harness: type[Harness], junk: bytes
) -> None:
    h = make_harness(RoomSettings(max_line=32, rate=5.0, burst=20))
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    h.room.feed(alice, junk * 10_000)
    h.flush()
    answers = h.take(alice)
    # the burst's worth of errors, one rate-limit notice, then bye: 10,000 lines is a flood
    assert len(answers) == 22
    assert answers[20]["code"] == "rate_limited"
    assert answers[21] == {"type": "bye", "reason": "flooding"}
    assert [e["type"] for e in h.take(bob)] == ["leave"]


def two_clock_room(settings: RoomSettings) -> tuple[Room, FakeClock, FakeClock]:
    """A room whose timers (monotonic) and timestamps (wall) run on separate fake clocks."""
    clock, wall = FakeClock(1000.0), FakeClock()
    return Room(settings, clock=clock, wall=wall), clock, wall


@pytest.mark.parametrize("step", [+3600.0, -3600.0, +86400.0 * 365])
def test_a_wall_clock_step_moves_no_timer_and_no_limit(step: float) -> None:
    """NTP or a VM resume steps the wall clock: nobody times out, no bucket drains or refills."""
    room, clock, wall = two_clock_room(
        RoomSettings(rate=1.0, burst=2, keepalive=60, idle_timeout=180)
    )
    alice, bob = room.open("alice", Mode.JSON), room.open("bob", Mode.JSON)
    room.feed(alice, b"1\n2\n3\n")  # the burst, then a notice
    room.flush()
    alice.take_output(), bob.take_output()
    wall.advance(step)
    clock.advance(0.5)
    room.tick()
    room.feed(alice, b"4\n")  # still limited: the wall clock step gave no tokens back
    clock.advance(0.5)
    room.feed(alice, b"5\n")  # one second of real time since the burst: one token
    room.tick()
    room.flush()
    assert alice.closing is None and bob.closing is None  # no idle-timeout storm
    got = [json.loads(line) for line in bob.take_output().splitlines()]
    assert [(e["type"], e["text"]) for e in got] == [("msg", "5")]
    assert got[0]["ts"] == wall.now  # what people see follows the wall clock
    clock.advance(60)
    room.tick()
    room.flush()
    assert [json.loads(line)["type"] for line in bob.take_output().splitlines()] == ["ping"]


def test_the_rate_limit_outlives_the_session(make_harness: type[Harness]) -> None:
    """Connect, burst, quit, reconnect: the name's bucket is not refilled by coming back."""
    h = make_harness(RoomSettings(rate=1.0, burst=3))
    bob = h.join("bob")
    mallory = h.join("mallory")
    h.send(mallory, "1", "2", "3", "/quit")
    h.room.end(mallory, "closed", gone=True)
    again = h.join("mallory")
    h.send(again, "4")  # no token: the first session took them all
    h.clock.advance(1.0)
    h.send(again, "5")  # one second, one token
    h.flush()
    assert [e["text"] for e in h.take(bob) if e["type"] == "msg"] == ["1", "2", "3", "5"]
    assert [e.get("code") for e in h.take(again)] == ["rate_limited"]


def test_a_budget_is_forgotten_once_full_again(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(rate=1.0, burst=3, join_rate=0.5, join_burst=2))
    alice, mallory = h.join("alice"), h.join("mallory")
    h.send(mallory, "1", "2")
    h.room.end(mallory, "closed", gone=True)
    h.room.tick()
    assert h.room.remembered_names() == 2  # mallory's buckets are not full: kept
    h.clock.advance(1.9)
    h.room.tick()
    assert h.room.remembered_names() == 2  # lines full again, joins not yet (2 s)
    h.clock.advance(0.2)
    h.room.tick()
    assert h.room.remembered_names() == 1  # alice only: memory is bounded
    assert alice.closing is None


def test_joins_per_name_are_limited(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(join_rate=0.2, join_burst=2))
    first, second = h.join("mallory"), h.join("mallory")
    third = h.open("mallory")
    assert third.refused is Refusal.TOO_MANY_JOINS and third.closing == "joining too often"
    h.flush()
    error, bye = h.take(third)
    assert error["code"] == "too_many_joins" and "try again in 5 s" in error["text"]
    assert bye == {"type": "bye", "reason": "joining too often"}
    assert len(h.room.sessions_of("mallory")) == 2  # the refused one never got in
    h.room.end(first, "closed", gone=True)
    h.room.end(second, "closed", gone=True)
    assert h.room.open("mallory", Mode.JSON).refused is Refusal.TOO_MANY_JOINS  # leaving: no refund
    h.clock.advance(5.0)
    assert h.room.open("mallory", Mode.JSON).refused is None
    assert h.room.counters.refused == {"too_many_joins": 2}


def test_sessions_per_name_are_capped(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(sessions_per_name=2))
    laptop, phone = h.join("alice"), h.join("Alice")
    tablet = h.room.open("ALICE", Mode.JSON)
    assert tablet.refused is Refusal.TOO_MANY_SESSIONS
    h.room.end(phone, "closed", gone=True)
    assert h.room.open("alice", Mode.JSON).refused is None
    assert laptop.closing is None


def test_zero_lifts_the_join_and_session_limits(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(join_rate=0, sessions_per_name=0))
    sessions = [h.join("crowd") for _ in range(50)]
    assert all(s.refused is None for s in sessions)


def test_every_input_draws_from_the_input_budget(make_harness: type[Harness]) -> None:
    """/pong, blank and whitespace lines and refused lines are not free (depth 4 x burst)."""
    h = make_harness(RoomSettings(rate=1.0, burst=2))  # input budget: 4/s, depth 8
    alice, bob = h.join("alice"), h.join("bob")
    h.room.feed(alice, b"/pong\n \n\t\n\n\xff\n/pong\n" * 30 + b"hel")
    h.flush()
    assert h.room.counters.input_dropped == 180 - 8
    notices = [e for e in h.take(alice) if e["type"] == "error"]
    assert notices[-1]["code"] == "rate_limited" and "172 dropped unread" in notices[-1]["text"]
    h.clock.advance(1.0)
    h.room.feed(alice, b"lo\n")  # the partial line kept across the dropped ones is intact
    h.flush()
    assert [e["text"] for e in h.take(bob)] == ["hello"]


def test_a_sustained_flood_is_disconnected(make_harness: type[Harness]) -> None:
    """Far over the input budget (25 x its depth dropped) is not a person: bye, flooding."""
    h = make_harness(RoomSettings(rate=1.0, burst=2))  # input depth 8; 200 may be dropped
    alice, bob = h.join("alice"), h.join("bob")
    h.room.feed(alice, b"/pong\n" * 208)  # 8 handled, 200 dropped: still within
    assert alice.closing is None
    h.room.feed(alice, b"/pong\n")
    assert alice.closing == "flooding"
    h.flush()
    assert h.take(alice)[-1] == {"type": "bye", "reason": "flooding"}
    assert [(e["type"], e["reason"]) for e in h.take(bob)] == [("leave", "flooding")]
