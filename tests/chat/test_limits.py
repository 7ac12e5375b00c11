"""Rate limiting (token bucket per name) and liveness (keepalive ping, idle timeout)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from mtlschat.chat.room import RoomSettings

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
    h = make_harness(RoomSettings(rate=1.0, burst=1))
    alice = h.join("alice")
    h.send(alice, "/who", "/who", "/pong", "/pong", "/quit")
    h.flush()
    assert [e["type"] for e in h.take(alice)] == ["who", "error", "bye"]


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
    h.room.tick(h.clock.advance(59))
    assert h.flush() == []
    h.send(bob, "/pong")  # bob stays active; alice says nothing from now on
    h.room.tick(h.clock.advance(2))
    h.flush()
    assert h.take(alice) == [{"type": "ping", "ts": start + 61}]
    assert h.take(bob) == []
    h.send(bob, "/pong")
    h.room.tick(h.clock.advance(30))
    assert h.flush() == []  # no second ping before another keepalive period
    h.send(bob, "/pong")
    h.room.tick(h.clock.advance(30))
    h.flush()
    assert [e["type"] for e in h.take(alice)] == ["ping"]
    h.send(bob, "still here")
    h.room.tick(h.clock.advance(59))  # 180 s of silence from alice
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
        h.room.tick(h.clock.advance(9))
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
    assert len(answers) == 21  # the burst's worth of errors, then one rate-limit notice
    assert answers[-1]["code"] == "rate_limited"
    assert h.take(bob) == []


def test_a_clock_stepping_back_does_not_lock_anyone_out(make_harness: type[Harness]) -> None:
    h = make_harness(RoomSettings(rate=1.0, burst=2))
    alice, bob = h.join("alice"), h.join("bob")
    h.take(alice)
    h.send(alice, "1", "2", "3")  # the burst, then a notice
    h.clock.advance(-3600)  # NTP steps the wall clock back an hour
    h.send(alice, "4")  # still limited (no refill), and noticed again: no stale "last notice"
    h.clock.advance(1)
    h.send(alice, "5")  # refills from the new time base
    h.flush()
    assert [e["text"] for e in h.take(bob)] == ["1", "2", "5"]
    assert [e["code"] for e in h.take(alice)] == ["rate_limited", "rate_limited"]
