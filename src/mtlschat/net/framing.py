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

LINE_TOO_LONG = "line_too_long"
BAD_UTF8 = "bad_utf8"


@dataclass(frozen=True, slots=True)
class FramingError:
    """A line that was refused by the framing layer (the stream itself stays usable)."""

    code: str  # LINE_TOO_LONG or BAD_UTF8, as in the protocol's error codes
    text: str


_TOO_LONG_TEXT = "line too long (max {} bytes), discarded"
_BAD_UTF8 = FramingError(BAD_UTF8, "line is not valid UTF-8, discarded")


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
        self._too_long = FramingError(LINE_TOO_LONG, _TOO_LONG_TEXT.format(max_line))

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete line held between calls (bounded by ``max_line + 1``)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[str | FramingError]:
        """Consume ``data``; return complete lines (terminators stripped) and errors, in order."""
        out: list[str | FramingError] = []
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if b"\n" not in data:
            self._keep(data)
            return out
        lines = data.split(b"\n")
        rest = lines.pop()
        max_line = self.max_line
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

    def _keep(self, partial: bytes) -> None:
        # max_line + 1 leaves room for the '\r' of a maximal CRLF line.
        if self._discarding or len(partial) > self.max_line + 1:
            self._discarding = True
            self._buf = b""
        else:
            self._buf = partial
