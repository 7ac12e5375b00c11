"""The pacer and the line splitter, sans-I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtlschat.client.outgoing import Pacer, RoomLimits, split_line
from mtlschat.client.protocol import Event


def test_limits_come_from_the_welcome_and_bad_values_keep_defaults() -> None:
    welcome = Event("welcome", {"limits": {"max_line": 300, "rate": 2.5, "burst": 7}})
    assert RoomLimits.from_welcome(welcome) == RoomLimits(300, 2.5, 7)
    odd = Event("welcome", {"limits": {"max_line": "x", "rate": -1, "burst": True}})
    assert RoomLimits.from_welcome(odd) == RoomLimits()
    assert RoomLimits.from_welcome(Event("welcome", {})) == RoomLimits()


def test_the_pacer_spends_the_burst_less_one_then_keeps_the_rate() -> None:
    pacer = Pacer()
    pacer.configure(RoomLimits(2048, 5.0, 20), now=100.0)
    sent = 0
    while pacer.delay(100.0) == 0:
        pacer.take(100.0)
        sent += 1
    assert sent == 19  # one token kept in reserve for lines bunched up on the way
    assert pacer.delay(100.0) == pytest.approx(0.2)
    assert pacer.delay(100.2) == pytest.approx(0)
    pacer.take(100.2)
    assert pacer.eta(10, 100.2) == pytest.approx(0.2 + 9 / 5.0)


def test_the_pacer_survives_a_reconnect_and_believes_a_refusal() -> None:
    pacer = Pacer()
    pacer.configure(RoomLimits(2048, 1.0, 3), now=0.0)
    pacer.take(0.0)
    pacer.take(0.0)  # one token left: the floor
    assert pacer.delay(0.0) == pytest.approx(1.0)
    pacer.configure(RoomLimits(2048, 1.0, 3), now=0.5)  # a reconnect does not refill it
    assert pacer.delay(0.5) == pytest.approx(0.5)
    pacer.refused(1.0)  # the server's bucket is empty, whatever we believed
    assert pacer.delay(1.0) == pytest.approx(2.0)


def test_no_rate_means_no_wait() -> None:
    pacer = Pacer()
    pacer.configure(RoomLimits(2048, 0.0, 1), now=0.0)
    for _ in range(1000):
        pacer.take(0.0)
    assert pacer.delay(0.0) == 0


def test_split_keeps_commands_and_escapes_slashes() -> None:
    assert split_line("short", 10) == ["short"]
    assert split_line("aaaa bbbb cccc", 9) == ["aaaa bbbb", "cccc"]
    assert split_line("/msg bob " + "x" * 10, 14) == ["/msg bob xxxxx", "/msg bob xxxxx"]
    assert split_line("/me " + "y" * 8, 8) == ["/me yyyy", "/me yyyy"]
    assert split_line("aaaa /etc", 6) == ["aaaa", "//etc"]
    assert split_line("//" + "z" * 6, 4) == ["//zz", "zzzz"]
    assert split_line("/who " + "x" * 20, 8) == ["/who " + "x" * 20]  # the server explains it


def test_split_never_cuts_a_character() -> None:
    assert split_line("✓✓✓✓", 7) == ["✓✓", "✓✓"]
    assert split_line("𝄞𝄞", 2) == ["𝄞", "𝄞"]  # a limit below one character: one per line


@given(st.text(min_size=1, max_size=400), st.integers(min_value=8, max_value=120))
def test_split_parts_fit_and_lose_nothing_but_white_space(text: str, limit: int) -> None:
    text = text.replace("\n", " ")
    parts = split_line("x" + text, limit)
    if len(parts) > 1:
        assert all(len(p.encode()) <= limit for p in parts)
        unescaped = [p[1:] if p.startswith("//") else p for p in parts]
        assert "".join("".join(unescaped).split()) == "".join(("x" + text).split())
