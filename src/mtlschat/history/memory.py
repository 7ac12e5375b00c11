"""A :class:`~mtlschat.history.store.HistoryStore` in memory, bounded by a line count.

A relayed room (issue 13) serves ``/history``, ``/search``, ``/resume`` and the join replay from
this mirror of the shared log: the node engine fills it at startup from the Redis stream, and
the room appends every chat line it is delivered, with the offset Redis gave it. Nothing here
outlives the process (the stream is the history); a mirror is never the only copy.

Search scans the lines, newest first (no index: at the default cap of 100,000 lines a scan is a
few tens of milliseconds, and searches are rare next to lines).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from mtlschat.ca.names import name_key
from mtlschat.history.store import CHAT_KINDS, Record, check_sequence, search_terms


def _offset(record: Record) -> int:
    return record.offset


class MemoryStore:
    """The last ``max_lines`` lines of each room (up to an eighth more before the oldest are
    dropped in one go), in memory; also at most ``max_age`` seconds old, if set."""

    def __init__(
        self,
        epoch: str,
        *,
        max_lines: int = 100_000,
        max_age: float = 0.0,
        location: str = "memory",
    ) -> None:
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self._epoch = epoch
        self.max_lines = max_lines
        self.max_age = max_age
        self._location = location
        self._lines: dict[str, list[Record]] = {}  # room -> lines, oldest first
        self._last: dict[str, int] = {}  # room -> last offset (stays when lines are trimmed)

    @property
    def epoch(self) -> str:
        """The epoch of the history this mirrors."""
        return self._epoch

    @property
    def location(self) -> str:
        """Where the history really lives (for messages)."""
        return self._location

    def load(
        self, room: str, epoch: str, records: Sequence[Record] = (), last_offset: int = 0
    ) -> None:
        """Replace ``room``'s lines by ``records`` (the log's tail, oldest first: its chat
        lines are kept) under ``epoch``; offsets go on after ``last_offset`` (or the last
        record's, if later). With no records: a new epoch whose lines are all gone."""
        self._epoch = epoch
        lines = [r for r in records if r.offset > 0 and r.kind in CHAT_KINDS]
        check_sequence(room, 0, lines)
        del lines[: max(0, len(lines) - self.max_lines)]
        self._lines[room] = lines
        self._last[room] = max(last_offset, lines[-1].offset if lines else 0)

    def last_offset(self, room: str) -> int:
        """The last offset appended to ``room`` (0 if none)."""
        return self._last.get(room, 0)

    def append(self, room: str, records: Sequence[Record]) -> None:
        """Add lines after the last ones (offsets must grow); the oldest past the cap go."""
        if not records:
            return
        check_sequence(room, self.last_offset(room), records)
        lines = self._lines.setdefault(room, [])
        lines.extend(records)
        self._last[room] = records[-1].offset
        if len(lines) > self.max_lines + self.max_lines // 8:
            # In one go, an eighth of the cap at a time: not a list shift per round.
            del lines[: len(lines) - self.max_lines]

    def since(self, room: str, after: int, limit: int, viewer: str) -> list[Record]:
        """Up to ``limit`` lines with offset > ``after``, oldest first; others' DMs redacted."""
        lines = self._lines.get(room, [])
        start = bisect.bisect_right(lines, after, key=_offset)
        key = name_key(viewer)
        return [r.for_viewer(key) for r in lines[start : start + max(0, limit)]]

    def last(self, room: str, count: int, viewer: str) -> list[Record]:
        """The last ``count`` lines ``viewer`` may read, oldest first."""
        return self._scan(room, count, viewer, [])

    def search(self, room: str, words: str, limit: int, viewer: str) -> list[Record]:
        """The last ``limit`` lines ``viewer`` may read containing all ``words`` (as the
        journal matches its unsaved lines: case-insensitive substrings)."""
        terms = [t.casefold() for t in search_terms(words)]
        return self._scan(room, limit, viewer, terms) if terms else []

    def _scan(self, room: str, count: int, viewer: str, terms: list[str]) -> list[Record]:
        key = name_key(viewer)
        found: list[Record] = []
        if count <= 0:
            return found
        for r in reversed(self._lines.get(room, [])):
            if r.visible_to(key) and all(t in r.text.casefold() for t in terms):
                found.append(r)
                if len(found) >= count:
                    break
        found.reverse()
        return found

    def trim(self, now: float, budget: int) -> int:
        """Drop at most ``budget`` lines older than ``max_age`` (the count cap holds always)."""
        if not self.max_age:
            return 0
        dropped = 0
        for lines in self._lines.values():
            cut = 0
            limit = min(len(lines), budget - dropped)
            while cut < limit and now - lines[cut].ts > self.max_age:
                cut += 1
            del lines[:cut]
            dropped += cut
        return dropped

    def close(self) -> None:
        """Nothing to release."""


__all__ = ["MemoryStore"]
