"""RESP without sockets: encoding, and replies parsed the same however the bytes are split."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtlschat.cluster.resp import ProtocolError, ReplyError, ReplyParser, encode

WIRE = (
    b"+OK\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$1\r\na\r\n*1\r\n:7\r\n"
    b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n*0\r\n"
)


def parse_all(chunks: list[bytes]) -> list[object]:
    parser = ReplyParser()
    replies: list[object] = []
    for chunk in chunks:
        parser.feed(chunk)
        replies.extend(parser.replies())
    return replies


def test_encode() -> None:
    assert encode(["SET", b"k\r\n", 1, 2.5]) == (
        b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n1\r\n$3\r\n2.5\r\n"
    )
    with pytest.raises(ValueError, match="needs at least its name"):
        encode([])


@given(st.lists(st.integers(min_value=0, max_value=len(WIRE)), max_size=20))
def test_replies_do_not_depend_on_how_the_bytes_arrive(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(WIRE)]
    replies = parse_all([WIRE[a:b] for a, b in itertools.pairwise(bounds)])
    assert replies[:6] == [b"OK", 42, b"hello", None, [b"a", [7]], replies[5]]
    assert isinstance(replies[5], ReplyError) and str(replies[5]).startswith("WRONGTYPE")
    assert replies[6:] == [[]]


def test_garbage_is_a_protocol_error() -> None:
    parser = ReplyParser()
    parser.feed(b"?what\r\n")
    with pytest.raises(ProtocolError):
        list(parser.replies())
