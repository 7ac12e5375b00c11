"""Sans-I/O line framing: bytes in, complete lines (or framing errors) out.

The server feeds whatever a TLS read returned, in any split; the decoder hands back every complete
line of the chunk in one pass. Lines end with ``\\n``; a ``\\r`` right before it is stripped.
Blank lines (empty after stripping) are dropped here, so callers never see them.

A misbehaving peer can only hurt itself: an over-long line is discarded up to its terminator and
reported once, invalid UTF-8 is reported, and nothing ever raises. Memory is bounded: the partial
line kept between calls never exceeds ``max_line + 1`` bytes (the +1 is a possible ``\\r``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import cast

LINE_TOO_LONG = "line_too_long"
BAD_UTF8 = "bad_utf8"


@dataclass(frozen=True, slots=True)
class FramingError:
    """A line that was refused by the framing layer (the stream itself stays usable)."""

    code: str  # LINE_TOO_LONG or BAD_UTF8, as in the protocol's error codes
    text: str


# Byte values, not b"\n": `int in bytes` is a plain memchr, several times faster than a
# bytes needle on CPython 3.11, and this test runs on every chunk.
_LF = 0x0A
_CR = 0x0D
_BAD_UTF8 = FramingError(BAD_UTF8, "line is not valid UTF-8, discarded")


@lru_cache(maxsize=8)
def _too_long(max_line: int) -> FramingError:
    return FramingError(LINE_TOO_LONG, f"line too long (max {max_line} bytes), discarded")


class LineDecoder:
    """Incremental splitter of a byte stream into UTF-8 lines of at most ``max_line`` bytes."""

    __slots__ = ("_buf", "_discarding", "_too_long", "max_line")

    def __init__(self, max_line: int) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        self._buf = b""
        # True while skipping the rest of a line that already overflowed the buffer.
        self._discarding = False
        self._too_long = _too_long(max_line)  # shared by every decoder with this limit

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete line held between calls (bounded by ``max_line + 1``)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[str | FramingError]:
        """Consume ``data``; return complete lines (terminators stripped) and errors, in order."""
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if _LF not in data:
            self._keep(data)
            return []
        max_line = self.max_line
        # Fast path, the common case: LF-terminated valid UTF-8, no line too long. One decode and
        # one split for the whole chunk; anything unusual falls through to the careful loop.
        if not self._discarding and _CR not in data:
            try:
                text = data.decode()
            except UnicodeDecodeError:  # bad bytes, or a character cut by the chunk boundary
                pass
            else:
                texts = text.split("\n")
                tail = texts.pop()
                if len(data) <= max_line or (text.isascii() and max(map(len, texts)) <= max_line):
                    self._keep(tail.encode() if tail else b"")
                    if "" in texts:
                        texts = [t for t in texts if t]
                    return cast("list[str | FramingError]", texts)
        lines = data.split(b"\n")
        rest = lines.pop()
        out: list[str | FramingError]
        out = []
        if self._discarding:
            # The first piece is the tail of a line that already overflowed.
            self._discarding = False
            out.append(self._too_long)
            del lines[0]
        append = out.append
        for raw in lines:
            if raw[-1:] == b"\r":
                raw = raw[:-1]
            if not raw:
                continue
            if len(raw) > max_line:
                append(self._too_long)
                continue
            try:
                append(raw.decode())
            except UnicodeDecodeError:
                append(_BAD_UTF8)
        self._keep(rest)
        return out

    def skip(self, data: bytes) -> None:
        """Drop ``data`` unread up to its last line terminator, with any partial line held (the
        lines are gone, not refused); what follows starts the next line."""
        last = data.rfind(b"\n")
        if last < 0:
            self.feed(data)  # no terminator: nothing to drop, only a partial line to keep
            return
        self._buf = b""
        self._discarding = False
        self._keep(data[last + 1 :])

    def _keep(self, partial: bytes) -> None:
        # max_line + 1 leaves room for the '\r' of a maximal CRLF line.
        if self._discarding or len(partial) > self.max_line + 1:
            self._discarding = True
            self._buf = b""
        else:
            self._buf = partial
