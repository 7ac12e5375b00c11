"""The room's side of history: one transaction per round, replay, recovery, degraded mode.

The room adds each line it hands out (:meth:`Journal.add`, the hot path: one list append) and
calls :meth:`Journal.commit` once per loop round, before any of the round's output is written to
a socket. If the store cannot be written (disk full, I/O error) the room keeps working: the lines
wait in memory (up to ``pending_cap``), the error is logged once, :attr:`Journal.degraded` says
why, and every commit after ``retry`` seconds tries again until the store takes them.

Queries (join replay, ``/history``, ``/search``, ``/resume``) see the store plus the lines not
yet in it, so nothing said is ever missing from what a member is shown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from mtlschat.ca.names import name_key
from mtlschat.history.store import (
    DM,
    HIDDEN,
    ROOM,
    HistoryError,
    HistoryStore,
    Record,
    search_terms,
)

log = logging.getLogger("mtlschat.history")

TRIM_BUDGET = 500  # lines indexed / deleted per tick at least (more if more were written)
TRIM_BUDGET_MAX = 2000  # ... and at most: one tick's pause stays around 10 ms


@dataclass(frozen=True, slots=True)
class Gap:
    """Offsets ``first..last`` of a room are not available (trimmed, lost, or too many)."""

    first: int
    last: int
    since: float | None  # time of the last line before the gap, if known
    until: float | None  # time of the first line after it, if any
    reason: str = "unavailable"  # or "too_many": more missed lines than one replay sends


class Journal:
    """History for one room, over any :class:`HistoryStore`."""

    def __init__(
        self,
        store: HistoryStore,
        room: str = ROOM,
        *,
        keep_dms: bool = True,
        pending_cap: int = 100_000,
        retry: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.room = room
        self.keep_dms = keep_dms
        self.pending_cap = pending_cap
        self.retry = retry
        self._monotonic = monotonic
        self._last = store.last_offset(room)
        self._round: list[Record] = []  # added this round, committed at its end
        self._pending: list[Record] = []  # rounds the store refused, oldest first
        self._retry_at = 0.0
        self._written = 0  # lines stored since the last trim (sizes the next trim)
        self.degraded: str | None = None  # why lines are not being saved, while they are not
        self.dropped = 0  # lines that never reached the store (pending_cap overflowed)
        self.saved = 0  # lines stored since start

    @property
    def epoch(self) -> str:
        """The store's epoch."""
        return self.store.epoch

    @property
    def last_offset(self) -> int:
        """The last offset the store has (or will have once it takes the pending lines)."""
        return self._round[-1].offset if self._round else self._last

    def add(self, record: Record) -> None:
        """Record one line of this round (its offset must follow the previous one)."""
        if record.kind == DM and not self.keep_dms:
            record = record.redacted()  # keep the offset sequence dense, not the message
        self._round.append(record)

    def extend(self, records: Sequence[Record]) -> None:
        """Record several lines of this round at once, in order (what :meth:`add` does for each)."""
        if self.keep_dms or all(r.kind != DM for r in records):
            self._round += records
        else:
            for r in records:
                self.add(r)

    def reset(self) -> None:
        """The store was reset (a new epoch, its lines gone): forget what waits for it and take
        its last offset again."""
        self._round = []
        self._pending = []
        self._last = self.store.last_offset(self.room)
        self.degraded = None

    def commit(self) -> str | None:
        """Store this round's lines in one transaction. Return ``"degraded"`` when saving just
        stopped working, ``"recovered"`` when it just worked again, else None.
        """
        batch = self._round
        if batch:
            self._round = []
            self._last = batch[-1].offset
        if self.degraded is None:
            if not batch:
                return None
            try:
                self.store.append(self.room, batch)
            except HistoryError as exc:
                self._pending = batch
                self._fail(str(exc))
                return "degraded"
            self.saved += len(batch)
            self._written += len(batch)
            return None
        self._pending.extend(batch)
        if len(self._pending) > self.pending_cap:
            drop = len(self._pending) - self.pending_cap
            del self._pending[:drop]
            self.dropped += drop
        if self._monotonic() < self._retry_at:
            return None
        try:
            self.store.append(self.room, self._pending)
        except HistoryError:
            self._retry_at = self._monotonic() + self.retry
            return None
        log.warning(
            "history recovered: %d waiting lines saved to %s%s",
            len(self._pending),
            self.store.location,
            f" ({self.dropped} lines were lost)" if self.dropped else "",
        )
        self.saved += len(self._pending)
        self._written += len(self._pending)
        self._pending = []
        self.degraded = None
        return "recovered"

    def _fail(self, why: str) -> None:
        self.degraded = why
        self._retry_at = self._monotonic() + self.retry
        log.error("history degraded: %s; the room goes on, lines wait in memory", why)

    def tick(self, now: float) -> None:
        """Retention and search indexing, a bounded amount per call (about once a second)."""
        if self.degraded is not None:
            return
        budget = min(TRIM_BUDGET_MAX, max(TRIM_BUDGET, 2 * self._written))
        self._written = 0
        try:
            self.store.trim(now, budget)
        except HistoryError as exc:
            log.warning("history trim failed: %s", exc)

    # ---- queries ---------------------------------------------------------------------------

    def _unsaved(self) -> list[Record]:
        return self._pending + self._round if self._pending else self._round

    def last(self, count: int, viewer: str) -> list[Record]:
        """The last ``count`` lines ``viewer`` may read, oldest first."""
        if count <= 0:
            return []
        key = name_key(viewer)
        tail = [r for r in self._unsaved() if r.visible_to(key)][-count:]
        if len(tail) < count:
            tail = self._read(lambda: self.store.last(self.room, count - len(tail), viewer)) + tail
        return tail

    def search(self, words: str, limit: int, viewer: str) -> list[Record]:
        """The last ``limit`` lines ``viewer`` may read that contain all ``words``."""
        terms = [t.casefold() for t in search_terms(words)]
        key = name_key(viewer)
        tail = [
            r
            for r in self._unsaved()
            if r.visible_to(key) and all(t in r.text.casefold() for t in terms)
        ][-limit:]
        if terms and len(tail) < limit:
            found = self._read(lambda: self.store.search(self.room, words, limit, viewer))
            tail = found[-(limit - len(tail)) :] + tail
        return tail

    def recover(
        self, after: int, viewer: str, limit: int, origins: Collection[int] = ()
    ) -> tuple[list[Record | Gap], int]:
        """What a client that saw everything up to offset ``after`` missed: the lines it may
        read (but not the room lines its own sessions ``origins`` sent), oldest first, with a
        :class:`Gap` where lines are gone; and the room's last offset (the client's new mark).
        """
        last = self.last_offset
        out: list[Record | Gap] = []
        if after >= last:
            return out, last
        start = after
        if last - after > limit:  # more than one replay sends: the oldest are skipped
            start = last - limit
            out.append(Gap(after + 1, start, None, None, "too_many"))
        key = name_key(viewer)
        unsaved = self._unsaved()
        first_unsaved = unsaved[0].offset if unsaved else last + 1
        rows: list[Record] = []
        if start + 1 < first_unsaved:
            rows = self._read(lambda: self.store.since(self.room, start, limit, viewer))
            rows = [r for r in rows if r.offset < first_unsaved]
        rows += [r.for_viewer(key) for r in unsaved if r.offset > start]
        expected = start + 1
        since: float | None = None
        for r in rows:
            if r.offset > expected:
                out.append(Gap(expected, r.offset - 1, since, r.ts))
            # The client showed its own room lines when they were typed (the server does not
            # echo them); DMs are echoed to the sender, so those it may have missed come back.
            if r.kind != HIDDEN and (r.kind == DM or r.origin not in origins):
                out.append(r)
            expected = r.offset + 1
            since = r.ts
        if expected <= last:
            out.append(Gap(expected, last, since, None))
        return out, last

    def _read(self, query: Callable[[], list[Record]]) -> list[Record]:
        try:
            return query()
        except HistoryError as exc:  # a failing disk: show what is in memory
            log.warning("history read failed: %s", exc)
            return []

    def close(self) -> None:
        """Try once more to save what waits, then close the store."""
        self.commit()
        if self._pending:
            try:
                self.store.append(self.room, self._pending)
                self._pending = []
            except HistoryError as exc:
                log.error("history: %d lines could not be saved: %s", len(self._pending), exc)
        self.store.close()
