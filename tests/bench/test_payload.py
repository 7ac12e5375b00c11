"""The stream checker (sans-I/O): every message counted once, in order, whatever the split."""

from __future__ import annotations

from array import array
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlschat.bench.payload import (
    DEFAULT_SIZE,
    HEADER_SIZE,
    StreamChecker,
    encode,
    encode_batch,
    parse_line,
)

WELCOME = b"* welcome r00001. online: r00001 (mtlschat 0.1.0; /help for commands)\n* s000 joined\n"


def line(seq: int, sender: int = 0, t_us: int = 1_000, name: bytes = b"s000") -> bytes:
    """A chat line as a server's text mode formats it."""
    return b"[12:00:01] <" + name + b"> " + encode(sender, seq, t_us) + b"\n"


def bare(seq: int, sender: int = 0, t_us: int = 1_000, name: bytes = b"") -> bytes:
    """A line as ``bench/floor_server.py --raw`` relays it: the payload alone."""
    return encode(sender, seq, t_us) + b"\n"


def feed_in_pieces(checker: StreamChecker, data: bytes, cuts: list[int], t_us: int = 5_000) -> None:
    pos = 0
    for cut in sorted(set(cuts)):
        checker.feed(data[pos:cut], t_us)
        pos = cut
    checker.feed(data[pos:], t_us)


def test_encode_is_fixed_size_and_parses_back() -> None:
    text = encode(7, 123, 456_789)
    assert len(text) == DEFAULT_SIZE
    assert parse_line(b"[12:00:01] <s007> " + text) == (7, 123, 456_789)
    assert encode_batch(7, 123, 2, 456_789, 40).split(b"\n")[:2] == [
        encode(7, 123, 456_789, 40),
        encode(7, 124, 456_789, 40),
    ]
    assert len(encode(0, 0, 0, HEADER_SIZE)) == HEADER_SIZE


@pytest.mark.parametrize(
    "text",
    [b"* s000 joined", b"[12:00:01] <bob> hello", b"[12:00:01] <bob> ~abc", b"", b"> ~"],
)
def test_other_lines_are_not_bench_lines(text: bytes) -> None:
    assert parse_line(text) is None


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("form", [line, bare])
@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=40_000), max_size=30))
def test_intact_stream_in_any_split(
    fast: bool, form: Callable[[int], bytes], cuts: list[int]
) -> None:
    welcome = WELCOME if form is line else b""  # (the floor server says nothing of its own)
    data = welcome + b"".join(form(i) for i in range(400))
    lat: array[int] = array("q")
    c = StreamChecker(1, fast, lat)
    feed_in_pieces(c, data, [x % len(data) for x in cuts])
    assert (c.received, c.gaps, c.disorder, c.other) == (400, 0, 0, welcome.count(b"\n"))
    assert c.done(400)
    assert all(v == 4_000 for v in lat)  # received at 5000 us, sent at 1000 us


def _corrupt(kind: str, lines: list[bytes]) -> list[bytes]:
    out = list(lines)
    if kind == "lost":
        del out[250]
    elif kind == "duplicated":
        out[250] = out[251]
    elif kind == "swapped":
        out[250], out[251] = out[251], out[250]
    elif kind == "lost-and-extra":
        out[250] = b"* ping: any line (or /pong) keeps you connected\n"
    return out


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("form", [line, bare])
@pytest.mark.parametrize("kind", ["lost", "duplicated", "swapped", "lost-and-extra"])
def test_damage_inside_one_read_is_caught(
    fast: bool, form: Callable[[int], bytes], kind: str
) -> None:
    data = WELCOME + b"".join(_corrupt(kind, [form(i) for i in range(400)]))
    c = StreamChecker(1, fast, array("q"))
    c.feed(data[:200], 0)  # the first bench line fixes the line length
    c.feed(data[200:], 0)  # then everything else in one read: the fast path's case
    assert c.received == 399
    assert c.gaps + c.disorder >= 1
    assert c.need_pong == (kind == "lost-and-extra")


def test_several_senders_are_checked_separately() -> None:
    lines = [line(i, sender=s, name=b"s%03d" % s) for i in range(50) for s in range(3)]
    lines.remove(line(10, sender=2, name=b"s002"))
    c = StreamChecker(3, fast=True, latencies=array("q"))  # fast needs one sender: full is used
    c.feed(b"".join(lines), 0)
    assert c.received == 149
    assert c.gaps == 1
    assert c.expected == [50, 50, 50]
    assert c.done(50)
    assert not c.done(51)


def test_a_foreign_bench_sender_is_ignored() -> None:
    c = StreamChecker(1, fast=False, latencies=array("q"))
    c.feed(line(0) + line(0, sender=5, name=b"s005"), 0)
    assert (c.received, c.other) == (1, 1)


@pytest.mark.parametrize("kind", ["lost", "duplicated", "swapped"])
def test_damage_is_caught_one_line_per_read(kind: str) -> None:
    """Paced traffic arrives one line per read: the single-line fast path checks each one."""
    c = StreamChecker(1, True, array("q"))
    c.feed(WELCOME, 0)
    for x in _corrupt(kind, [line(i) for i in range(400)]):
        c.feed(x, 0)
    assert c.received == 399
    assert c.gaps + c.disorder >= 1


@pytest.mark.parametrize("fast", [True, False])
def test_a_resuming_receiver_picks_the_stream_up_where_it_joins(fast: bool) -> None:
    # storm: a member back after the restart gets the sender's stream from line 40 on; from
    # there every line must still arrive, in order.
    chk = StreamChecker(1, fast, array("q"), resume=True)
    assert chk.expected_lines(100) == 100 and not chk.done(100)  # nothing seen: all missing
    chk.feed(WELCOME + b"".join(line(i) for i in range(40, 70)), 5_000)
    chk.feed(b"".join(line(i) for i in range(70, 100)), 5_000)
    assert chk.received == 60 and chk.gaps == 0 and chk.disorder == 0
    assert chk.expected_lines(100) == 60 and chk.done(100)
    gap = StreamChecker(1, fast, array("q"), resume=True)
    gap.feed(line(40) + line(41) + line(43), 5_000)  # 42 lost after joining
    assert gap.gaps == 1 and gap.expected_lines(44) - gap.received == 1
    whole = StreamChecker(1, fast, array("q"))  # not resuming: the stream starts at 0
    whole.feed(line(40), 5_000)
    assert whole.gaps == 40 and whole.expected_lines(41) == 41
