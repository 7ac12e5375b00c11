"""LineDecoder: unit tests and hypothesis properties (any split, errors not exceptions, bounded)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlschat.chat.framing import BAD_UTF8, LINE_TOO_LONG, FramingError, LineDecoder

Out = list[str | FramingError]


def codes(out: Out) -> list[str]:
    return [item if isinstance(item, str) else f"!{item.code}" for item in out]


def reference(stream: bytes, max_line: int) -> list[str]:
    """The obvious, whole-stream definition of what the decoder must produce."""
    result: list[str] = []
    for raw in stream.split(b"\n")[:-1]:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            continue
        if len(raw) > max_line:
            result.append(f"!{LINE_TOO_LONG}")
            continue
        try:
            result.append(raw.decode())
        except UnicodeDecodeError:
            result.append(f"!{BAD_UTF8}")
    return result


def test_lines_and_terminators() -> None:
    d = LineDecoder(100)
    assert d.feed(b"one\ntwo\r\nthr") == ["one", "two"]
    assert d.feed(b"ee\n\n\r\n") == ["three"]
    assert d.feed(b"a\rb\n") == ["a\rb"]  # a lone CR is not a terminator
    assert d.buffered == 0


def test_utf8_split_across_chunks() -> None:
    d = LineDecoder(100)
    data = "héllo 漢字 🙂\n".encode()
    out: Out = []
    for i in range(len(data)):
        out += d.feed(data[i : i + 1])
    assert out == ["héllo 漢字 🙂"]


def test_bad_utf8_is_an_error_and_the_stream_goes_on() -> None:
    d = LineDecoder(100)
    out = d.feed(b"ok\n\xc3\x28\nfine\n")
    assert codes(out) == ["ok", "!bad_utf8", "fine"]


def test_over_long_line_discarded_with_one_error_and_bounded_memory() -> None:
    d = LineDecoder(10)
    out: Out = []
    out += d.feed(b"short\n" + b"x" * 11)
    assert d.buffered == 11  # max_line + 1 may be a line of max_line and its CR
    for _ in range(1000):
        out += d.feed(b"y" * 100)
        assert d.buffered <= 11
    out += d.feed(b"tail\nnext\n")
    assert codes(out) == ["short", "!line_too_long", "next"]


def test_exact_limits() -> None:
    d = LineDecoder(5)
    assert d.feed(b"12345\n") == ["12345"]
    assert d.feed(b"12345\r\n") == ["12345"]
    assert codes(d.feed(b"123456\n")) == ["!line_too_long"]
    assert codes(d.feed(b"123456\r\n")) == ["!line_too_long"]
    assert d.feed(b"12345\r") == []
    assert d.feed(b"\n") == ["12345"]


def test_error_text_names_the_limit() -> None:
    (err,) = LineDecoder(7).feed(b"x" * 8 + b"\n")
    assert isinstance(err, FramingError)
    assert "7" in err.text


def test_max_line_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LineDecoder(0)


# Streams rich in the interesting bytes: terminators, CRs, invalid UTF-8, multi-byte UTF-8.
pieces = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"\n", b"\r\n", b"\r", b"\xff", b"\xc3", "é🙂".encode(), b"x" * 9]),
    st.text(max_size=8).map(str.encode),
)
streams = st.lists(pieces, max_size=40).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(stream=streams, max_line=st.integers(1, 24), cuts=st.lists(st.integers(0, 500)))
def test_any_split_gives_the_reference_output(
    stream: bytes, max_line: int, cuts: list[int]
) -> None:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    d = LineDecoder(max_line)
    out: Out = []
    for a, b in itertools.pairwise(points):
        out += d.feed(stream[a:b])
        assert d.buffered <= max_line + 1
    assert codes(out) == reference(stream, max_line)
    # and the same as one big feed
    assert codes(LineDecoder(max_line).feed(stream)) == codes(out)


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=30), max_line=st.integers(1, 16))
def test_arbitrary_bytes_never_raise_and_memory_stays_bounded(
    chunks: list[bytes], max_line: int
) -> None:
    d = LineDecoder(max_line)
    for chunk in chunks:
        for item in d.feed(chunk):
            if isinstance(item, str):
                assert 0 < len(item.encode()) <= max_line
                assert "\n" not in item
            else:
                assert item.code in (LINE_TOO_LONG, BAD_UTF8)
        assert d.buffered <= max_line + 1


def test_skip_drops_whole_lines_and_keeps_the_next_partial_one() -> None:
    d = LineDecoder(20)
    assert d.feed(b"par") == []
    d.skip(b"tial\nx\ny\nne")  # the held partial line goes with the skipped ones
    assert d.feed(b"xt\n") == ["next"]
    d.skip(b"no terminator")  # nothing to drop: it is the start of a line
    assert d.feed(b"\n") == ["no terminator"]
