"""The room's log in Redis: one stream entry per published batch, its records packed in one
field; the same entry as pushed on the room's channel; the feed's catch-up XRANGE; and the
history mirror filled at connect from the stream's newest end.

An entry is ``o`` (the last chat-line offset before it), ``n`` (the node that wrote it), ``b``
(that node's batch number; 0 for an entry a script wrote), ``p`` (the records: a JSON array of
groups ``[ts, kind, sender, to, origin, [text, ...]]``, a group per run of records alike but
for their text) and, if the rate limit refused some lines, ``z``
(JSON ``{name key: lines of that name accepted}``: that name's later lines were refused).
Readers number the chat lines ``o + 1``, ``o + 2``, ... in row order, so offsets stay dense as
in the SQLite store. One entry per batch instead of one per record is what keeps a burst cheap:
Redis appends one entry per round and every node parses one field per round, not eight per line.

Every script that appends an entry also publishes it on the channel ``log:push`` (see
:func:`decode_push`): a node that is caught up gets each entry pushed on the connection it
publishes on, with no read to send again per entry (each is one more wake-up of Redis and of the
node). The stream stays the record: a node that is behind, or was away, reads it with XRANGE.

Sans-I/O: these build commands and read replies (hiredis values: bytes, lists); the engine sends
them through its link.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any, NamedTuple

from mtlschat.ca.names import name_key
from mtlschat.cluster.keys import RoomKeys
from mtlschat.history.store import CHAT_KINDS, Record

FEED_RECORDS = 2000  # records per catch-up read, about: one round's delivery stays a round's worth
FEED_COUNT = 500  # entries per catch-up read at most (entries of one record each: a paced room)
PAGE = 100  # entries per XREVRANGE page when filling the mirror
_dumps = json.JSONEncoder(ensure_ascii=False, check_circular=False, separators=(",", ":")).encode


class Entry(NamedTuple):
    """One log entry, decoded."""

    id: str
    base: int  # the last chat-line offset before this entry
    last: int  # the last chat-line offset at its end (base if it holds none)
    node: str  # the node that wrote it
    records: list[Record]
    runs: list[int]  # where each of its groups ends in ``records`` (see Room.deliver)


def text_of(value: object) -> str:
    """A reply's bytes as text (None: empty)."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def run_ends(records: Sequence[Record]) -> list[int]:
    """Where each run of records that differ only in offset and text ends (end indexes): what
    :meth:`Room.deliver <mtlschat.chat.room.Room.deliver>` handles at once, and a group of an
    entry."""
    ends: list[int] = []
    last: tuple[object, ...] | None = None
    for i, r in enumerate(records):
        key = (r[1], r[2], r[3], r[5], r[6], r[7])
        if key != last and i:
            ends.append(i)
        last = key
    if records:
        ends.append(len(records))
    return ends


def pack(records: Sequence[Record], runs: Sequence[int] | None = None) -> str:
    """The ``p`` field of an entry: the records as groups ``[ts, kind, sender, to, origin,
    [text, ...]]``, one per run of records that differ only in their text (a round of one
    sender's lines is one group: its fields are written and parsed once, not per line). Offset
    and node are the entry's. ``runs``: :func:`run_ends` of ``records``, if known already."""
    groups: list[tuple[object, ...]] = []
    start = 0
    for end in run_ends(records) if runs is None else runs:
        r = records[start]
        groups.append((r[1], r[2], r[3], r[5], r[6], [x[4] for x in records[start:end]]))
        start = end
    return _dumps(groups)


def _rows(groups: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    # Groups back to rows (ts, kind, sender, text, to, origin): the rare path (refusals).
    return [(g[0], g[1], g[2], text, g[3], g[4]) for g in groups for text in g[5]]


@functools.lru_cache(maxsize=4096)
def sender_key(name: str) -> str:
    """The name key of a line's sender, whose bucket its line takes a token from (cached: a
    burst says one name thousands of times)."""
    return name_key(name)


def refused(rows: Sequence[Sequence[object]], over: str | bytes) -> set[int]:
    """The indexes of the chat rows (``(ts, kind, sender, ...)``) the rate limit refused, given
    the publish script's ``over`` (JSON ``{name key: lines accepted}``; empty: none)."""
    if not over:
        return set()
    left = json.loads(over)
    out = set()
    for i, row in enumerate(rows):
        if row[1] in CHAT_KINDS:
            key = sender_key(str(row[2]))
            if key in left:
                if left[key] > 0:
                    left[key] -= 1
                else:
                    out.add(i)
    return out


def decode_fields(eid: str, raw: Sequence[object]) -> Entry:
    """An entry's fields ``[name, value, ...]`` (bytes, as hiredis gives them) -> :class:`Entry`.
    Raises ValueError if they are not an entry."""
    f = dict(zip(raw[::2], raw[1::2], strict=False))
    try:
        base = int(f[b"o"])  # type: ignore[call-overload]
        node = f[b"n"].decode()  # type: ignore[attr-defined]
        groups = json.loads(f[b"p"])  # type: ignore[arg-type]
        over = f.get(b"z")
        if over:  # some lines refused: drop them from the groups (one group per row)
            rows = _rows(groups)
            drop = refused(rows, over)  # type: ignore[arg-type]
            groups = [(*r[:3], r[4], r[5], [r[3]]) for i, r in enumerate(rows) if i not in drop]
        offset = base
        records: list[Record] = []
        runs: list[int] = []
        for ts, kind, sender, to, origin, texts in groups:
            if type(texts) is not list:
                raise TypeError("a group's texts are not a list")
            k = len(texts)
            if kind in CHAT_KINDS:
                offsets: Iterable[int] = range(offset + 1, offset + k + 1)
                offset += k
            else:
                offsets = repeat(0, k)
            # The group's Records, built in C: zip makes each row, tuple.__new__ makes it a
            # Record (a NamedTuple's own __new__ is Python code: ~5x slower on a burst).
            made = zip(offsets, repeat(ts), repeat(kind), repeat(sender), texts, repeat(to),
                       repeat(origin), repeat(node))  # fmt: skip
            records += map(tuple.__new__, repeat(Record), made)
            if k:
                runs.append(len(records))
    except (KeyError, ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"bad log entry {eid}: {exc!r:.80}") from None
    return Entry(eid, base, offset, node, records, runs)


def decode_entry(entry: object) -> Entry:
    """``[id, [field, value, ...]]`` -> :class:`Entry`. Raises ValueError if it is not one."""
    if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], list):
        raise ValueError(f"not a stream entry: {entry!r:.80}")
    return decode_fields(text_of(entry[0]), entry[1])


def decode_entries(entries: object) -> list[Entry]:
    """A list of entries (an XRANGE or XREVRANGE reply)."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError(f"not a list of stream entries: {entries!r:.80}")
    return [decode_entry(e) for e in entries]


def catch_up(keys: RoomKeys, after: str, count: int) -> list[str | int]:
    """The feed's read when it is behind: at most ``count`` entries (see
    :func:`catch_up_count`) that follow stream id ``after`` in the log."""
    return ["XRANGE", keys.log, "(" + after, "+", "COUNT", count]


def catch_up_count(per_entry: float) -> int:
    """The COUNT of :func:`catch_up`: about FEED_RECORDS records given ``per_entry`` records per
    entry lately (a reply this long means there may be more). A burst's entries hold a round
    each: one reply of hundreds of them would be one giant round for every member, whose queues
    would overflow as slow consumers; what is not read yet waits in Redis."""
    return max(1, min(FEED_COUNT, int(FEED_RECORDS / max(per_entry, 1.0))))


def xtrim_by_age(keys: RoomKeys, before: float) -> list[str | int]:
    """Trim the log of entries added before ``before`` (Unix seconds; stream ids are
    milliseconds of Redis's clock). Exact, not ``~`` (which only drops whole nodes of 100
    entries): it runs once a minute and removes a minute's entries at most, once trimmed."""
    return ["XTRIM", keys.log, "MINID", f"{max(0, int(before * 1000))}-0"]


def range_entries(reply: object) -> tuple[list[Entry], str | None, int, list[str]]:
    """An XRANGE reply -> (the entries, the last id read, how many were read, what could not
    be decoded). An entry that is not one is skipped and named, not fatal: the feed must move
    past it. Raises ValueError if the reply is not a list of entries."""
    if not isinstance(reply, list):
        raise ValueError(f"not an XRANGE reply: {reply!r:.80}")
    entries: list[Entry] = []
    errors: list[str] = []
    last: str | None = None
    for e in reply:
        try:
            entries.append(decode_entry(e))
        except ValueError as exc:
            errors.append(str(exc))
        if isinstance(e, list) and e and isinstance(e[0], bytes):
            last = e[0].decode()
    return entries, last, len(reply), errors


def decode_push(data: bytes) -> Entry:
    """A message of the room's channel -> :class:`Entry`. The scripts publish ``ID BASE BATCH
    LEN(NODE) LEN(Z)\\n`` then the node, ``z`` and ``p`` fields unseparated (lengths in bytes,
    so a node name may hold any byte). Raises ValueError if it is not one."""
    head, _, rest = data.partition(b"\n")
    try:
        eid, base, batch, node_len, z_len = head.split(b" ")
        n, z = int(node_len), int(z_len)
    except ValueError:
        raise ValueError(f"not a pushed entry: {data!r:.80}") from None
    raw = [b"o", base, b"n", rest[:n], b"b", batch, b"p", rest[n + z :]]
    if z:
        raw += [b"z", rest[n : n + z]]
    return decode_fields(eid.decode("ascii", "replace"), raw)


def id_order(eid: str) -> tuple[int, int]:
    """A stream id as what orders it (``"10-0"`` follows ``"9-5"``)."""
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq or 0)


class MirrorLoad:
    """Fill a history mirror with the newest ``want`` chat lines at or before stream id ``upto``
    (at connect, and again after the log was trimmed past what this node had read).

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
        for entry in entries:
            for record in reversed(entry.records):
                if record.offset > 0:
                    self._newest_first.append(record)
        if len(entries) < PAGE or len(self._newest_first) >= self.want:
            self.done = True
        else:
            self._upto = "(" + entries[-1].id

    @property
    def records(self) -> Sequence[Record]:
        """The lines loaded, oldest first (offsets strictly increasing)."""
        out = self._newest_first[: self.want]
        out.reverse()
        return out
