"""Benchmark message payloads and the receiver-side stream checker (sans-I/O).

A bench message is a fixed-size chat text carrying its sender index, a sequence number and the
sender's send time, so every receiver can verify that each message arrived, in order, and measure
latency from the message itself::

    ~SSS:QQQQQQQQQ:TTTTTTTTTTTTTTTT:xxxx...      (SSS sender, QQ.. seq, TT.. send time in us)

Servers prefix a text-mode chat line with ``[HH:MM:SS] <name> ``; the payload is whatever follows
the last ``> `` (both mtlschat and the reference server format it that way).
"""

from __future__ import annotations

import time
from array import array

HEADER_SIZE = 32
DEFAULT_SIZE = 64
MAX_SENDERS = 1000
_MARK = b"> ~"


def now_us() -> int:
    """The clock both senders and receivers use: CLOCK_MONOTONIC, system-wide on Linux."""
    return time.monotonic_ns() // 1000


def encode(sender: int, seq: int, t_us: int, size: int = DEFAULT_SIZE) -> bytes:
    """One message text (without the newline), exactly ``size`` bytes long."""
    head = b"~%03d:%09d:%016d:" % (sender, seq, t_us)
    return head + b"x" * (size - HEADER_SIZE)


def encode_batch(sender: int, first_seq: int, count: int, t_us: int, size: int) -> bytes:
    """``count`` consecutive messages joined into one write, each terminated by ``\\n``."""
    pad = b"x" * (size - HEADER_SIZE) + b"\n"
    return b"".join(
        b"~%03d:%09d:%016d:%s" % (sender, seq, t_us, pad)
        for seq in range(first_seq, first_seq + count)
    )


def payload_start(line: bytes) -> int:
    """Where the bench payload starts in a received line: after the last ``> `` (a chat line),
    or at 0 for a bare payload (``bench/floor_server.py --raw`` relays the bytes as they are);
    -1 if there is none."""
    i = line.rfind(_MARK)
    if i >= 0:
        return i + 2
    return 0 if line[:1] == b"~" else -1


def parse_line(line: bytes) -> tuple[int, int, int] | None:
    """``(sender, seq, send_time_us)`` from one received line, or None if it is not a bench line."""
    i = payload_start(line)
    if i < 0:
        return None
    p = line[i:]
    if len(p) < HEADER_SIZE or p[4:5] != b":" or p[14:15] != b":":
        return None
    try:
        return int(p[1:4]), int(p[5:14]), int(p[15:31])
    except ValueError:
        return None


_ONES = bytes(48 + i % 10 for i in range(100))
_TENS = bytes(48 + i // 10 % 10 for i in range(100))
_pattern: dict[str, bytes] = {"ones": _ONES, "tens": _TENS}


def _cycle(kind: str, base: int, n: int) -> bytes:
    """``n`` bytes of the repeating digit pattern ``kind``, starting at position ``base``."""
    pat = _pattern[kind]
    if len(pat) < base + n:
        pat = _pattern[kind] = pat * ((base + n) // len(pat) + 1)
    return pat[base : base + n]


def _ones(base: int, n: int) -> bytes:
    return _cycle("ones", base, n)


def _tens(base: int, n: int) -> bytes:
    return _cycle("tens", base, n)


class StreamChecker:
    """Verifies one receiver's stream: every sender's sequence must arrive complete and in order.

    ``feed`` takes decrypted bytes in any split. In ``fast`` mode (one sender, used for bursts) a
    batch of complete lines is checked without splitting it: its line count, its length (all bench
    lines from one sender have the same length), the sequence numbers of its first and last lines,
    and the last two digits of every line's sequence number (strided slices); anything unexpected
    falls back to parsing every line. Latency samples (microseconds) go to ``latencies``: every
    line in full mode, the first and last line of each batch in fast mode.
    """

    __slots__ = (
        "digit_off",
        "disorder",
        "expected",
        "fast",
        "first",
        "gaps",
        "last_us",
        "latencies",
        "line_len",
        "need_pong",
        "other",
        "reads",
        "received",
        "tail",
    )

    def __init__(
        self, senders: int, fast: bool, latencies: array[int], *, resume: bool = False
    ) -> None:
        # ``resume``: the receiver (re)joined a stream under way, so each sender's first line
        # seen sets where its sequence starts (-1: not seen yet); from there on it is checked.
        self.expected = [-1 if resume else 0] * senders
        self.first = list(self.expected)
        self.fast = fast and senders == 1
        self.latencies = latencies
        self.tail = b""
        self.line_len = 0
        self.digit_off = 0
        self.received = 0
        self.gaps = 0
        self.disorder = 0
        self.other = 0
        self.last_us = 0
        self.need_pong = False
        self.reads = 0

    def feed(self, data: bytes, t_us: int) -> int:
        """Consume ``data`` received at ``t_us``; return how many bench messages it completed."""
        self.reads += 1
        if self.tail:
            data = self.tail + data
        end = data.rfind(b"\n")
        if end < 0:
            self.tail = data
            return 0
        self.tail = data[end + 1 :]
        if data.find(_MARK, 0, end) < 0 and data[:1] != b"~" and data.find(b"\n~", 0, end) < 0:
            # Only join notices, welcomes, pings: thousands of them while many receivers
            # connect (every join goes to everyone), so they are counted without a split.
            self.other += data.count(b"\n", 0, end + 1)
            if data.find(b"* ping", 0, end) >= 0 or data.find(b'"type": "ping"', 0, end) >= 0:
                self.need_pong = True
            return 0
        pos = n = 0
        if self.fast:
            if not self.line_len:
                # Welcome and join lines come first: parse up to the first bench line, which
                # fixes the line length, then take the rest of the chunk on the fast path.
                while pos <= end and not self.line_len:
                    nl = data.index(b"\n", pos)
                    n += self._line(data[pos:nl], t_us)
                    pos = nl + 1
            if self.line_len and pos <= end:
                k = self._fast(data, pos, end, t_us)
                if k:
                    n += k
                    pos = end + 1
        if pos <= end:
            n += self._full(data, pos, end, t_us)
        if n:
            self.received += n
            self.last_us = t_us
        return n

    def _fast(self, data: bytes, start: int, end: int, t_us: int) -> int:
        size = self.line_len
        n = data.count(b"\n", start, end + 1)
        if end + 1 - start != n * size:
            return 0
        if n == 1:  # paced traffic: one line per read, one parse
            one = parse_line(data[start:end])
            if one is None or one[0] != 0 or one[1] != self.expected[0]:
                return 0
            self.expected[0] += 1
            self.latencies.append(t_us - one[2])
            return 1
        first = parse_line(data[start : start + size - 1])
        last = parse_line(data[end + 1 - size : end])
        exp = self.expected[0]
        if (
            first is None
            or last is None
            or first[0] != 0
            or last[0] != 0
            or first[1] != exp
            or last[1] != exp + n - 1
        ):
            return 0
        # Every line's last two seq digits, read with strided slices (C speed): together with
        # the count and the two ends, a lost, repeated or reordered line cannot go unnoticed.
        off = start + self.digit_off
        base = exp % 100
        if data[off : end + 1 : size] != _ones(base, n) or data[off - 1 : end + 1 : size] != _tens(
            base, n
        ):
            return 0
        self.expected[0] = exp + n
        self.latencies.append(t_us - first[2])
        if n > 1:
            self.latencies.append(t_us - last[2])
        return n

    def _full(self, data: bytes, start: int, end: int, t_us: int) -> int:
        line = self._line
        return sum([line(x, t_us) for x in data[start:end].split(b"\n")])

    def _line(self, line: bytes, t_us: int) -> int:
        msg = parse_line(line)
        expected = self.expected
        if msg is None or msg[0] >= len(expected):
            if line.startswith(b"* ping") or line.startswith(b'{"type": "ping"'):
                self.need_pong = True
            self.other += 1
            return 0
        sender, seq, sent = msg
        exp = expected[sender]
        if exp < 0:  # resuming: the first line of this sender
            exp = self.first[sender] = seq
        if seq < exp:
            self.disorder += 1  # a duplicate or a late line: never counted twice
            return 0
        self.gaps += seq - exp
        expected[sender] = seq + 1
        self.latencies.append(t_us - sent)
        if not self.line_len:
            self.line_len = len(line) + 1
            self.digit_off = payload_start(line) + 13  # the seq's last digit
        return 1

    def expected_lines(self, per_sender: int) -> int:
        """Lines this receiver should get: all, or (resuming) all from the first one it saw."""
        return sum(per_sender - max(0, first) for first in self.first)

    def done(self, per_sender: int) -> bool:
        """True once every sender's last message (``per_sender - 1``) has been seen."""
        return all(e >= per_sender for e in self.expected)
