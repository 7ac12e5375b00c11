"""The room's log in Redis, read: stream entries decoded to :class:`Record`, the feed's XREAD, and
the history mirror filled at connect from the newest end of the stream, page by page.

Sans-I/O: these build commands and read replies (hiredis values: bytes, lists); the engine sends
them through its link.
"""

from __future__ import annotations

from collections.abc import Sequence

from mtlschat.cluster.keys import STREAM_FIELDS, RoomKeys
from mtlschat.history.store import CHAT_KINDS, Record

FEED_BLOCK_MS = 5000  # an XREAD waits this long for news (under the link's reply timeout)
FEED_COUNT = 2000  # entries per XREAD reply at most
PAGE = 1000  # entries per XREVRANGE page when filling the mirror
_ORDER = [f.encode() for f in STREAM_FIELDS]


def text_of(value: object) -> str:
    """A reply's bytes as text (None: empty)."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _number(value: object, kind: type[int] | type[float]) -> int | float:
    return kind(text_of(value) or 0) if value is not None else kind(0)


def decode_entry(entry: object) -> tuple[str, Record]:
    """``[id, [field, value, ...]]`` -> (id, Record). Raises ValueError if it is not one."""
    if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], list):
        raise ValueError(f"not a stream entry: {entry!r:.80}")
    raw = entry[1]
    if len(raw) == 16 and raw[::2] == _ORDER:  # as the scripts write them: no lookups
        try:
            o, t, k, s, x, r, g, n = raw[1::2]
            return entry[0].decode(), Record(
                int(o), float(t), k.decode(), s.decode(), x.decode(), r.decode(), int(g),
                n.decode(),
            )  # fmt: skip
        except (AttributeError, ValueError, UnicodeDecodeError):
            pass  # the slow path below says what is wrong
    f = {text_of(raw[i]): raw[i + 1] for i in range(0, len(raw) - 1, 2)}
    try:
        record = Record(
            int(_number(f.get("o"), int)),
            float(_number(f.get("t"), float)),
            text_of(f.get("k", b"")),
            text_of(f.get("s", b"")),
            text_of(f.get("x", b"")),
            text_of(f.get("r", b"")),
            int(_number(f.get("g"), int)),
            text_of(f.get("n", b"")),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad stream entry {text_of(entry[0])}: {exc}") from None
    return text_of(entry[0]), record


def decode_entries(entries: object) -> list[tuple[str, Record]]:
    """A list of entries (XRANGE, XREVRANGE, one stream of XREAD)."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError(f"not a list of stream entries: {entries!r:.80}")
    return [decode_entry(e) for e in entries]


def xread(keys: RoomKeys, after: str) -> list[str | int]:
    """The feed's command: what follows ``after`` in the log, waiting up to FEED_BLOCK_MS."""
    return ["XREAD", "COUNT", FEED_COUNT, "BLOCK", FEED_BLOCK_MS, "STREAMS", keys.log, after]


def xtrim_by_age(keys: RoomKeys, before: float) -> list[str | int]:
    """Trim the log of entries added before ``before`` (Unix seconds; stream ids are
    milliseconds of Redis's clock). Exact, not ``~`` (which only drops whole nodes of 100
    entries): it runs once a minute and removes a minute's entries at most, once trimmed."""
    return ["XTRIM", keys.log, "MINID", f"{max(0, int(before * 1000))}-0"]


def xread_entries(reply: object) -> list[tuple[str, Record]]:
    """The entries of an XREAD reply (None, a timeout: none)."""
    if reply is None:
        return []
    if not isinstance(reply, list) or not reply or not isinstance(reply[0], list):
        raise ValueError(f"not an XREAD reply: {reply!r:.80}")
    return decode_entries(reply[0][1])


class MirrorLoad:
    """Fill a history mirror with the newest ``want`` chat lines at or before stream id ``upto``.

    ``command()`` gives the next XREVRANGE to send (None when done); ``take(reply)`` reads its
    reply; ``records`` is the result, oldest first, offsets increasing.
    """

    def __init__(self, keys: RoomKeys, upto: str, want: int) -> None:
        self.keys = keys
        self._upto = upto
        self.want = want
        self._newest_first: list[Record] = []
        self.done = want <= 0 or upto == "0-0"

    def command(self) -> list[str | int] | None:
        """The next page's XREVRANGE, or None when the mirror has what it wants."""
        if self.done:
            return None
        return ["XREVRANGE", self.keys.log, self._upto, "-", "COUNT", PAGE]

    def take(self, reply: object) -> None:
        """One page's reply."""
        entries = decode_entries(reply)
        for _, record in entries:
            if record.kind in CHAT_KINDS and record.offset > 0:
                self._newest_first.append(record)
        if len(entries) < PAGE or len(self._newest_first) >= self.want:
            self.done = True
        else:
            self._upto = "(" + entries[-1][0]

    @property
    def records(self) -> Sequence[Record]:
        """The lines loaded, oldest first (offsets strictly increasing)."""
        out = self._newest_first[: self.want]
        out.reverse()
        return out
