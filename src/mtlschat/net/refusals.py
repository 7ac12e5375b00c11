"""Refused connections in the log: the first few of each reason one line each, then a count.

A client without a valid certificate can make the server refuse a thousand handshakes a second;
one log line each would let it fill the disk and bury everything else. Within each interval,
the first :data:`FIRST` refusals of a reason are logged in full (who, why); the rest are
counted, and one summary line per reason says how many and from how many addresses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

INTERVAL = 10.0  # seconds per summary window
FIRST = 5  # refusals of one reason logged in full per window
MAX_SOURCES = 10_000  # distinct addresses remembered per reason and window (the count caps there)


@dataclass(slots=True)
class _Tally:
    count: int = 0
    sources: set[str] = field(default_factory=set)


class RefusalLog:
    """Counts refusals per reason per :data:`INTERVAL`; logs the first few and a summary."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        interval: float = INTERVAL,
        first: int = FIRST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._first = first
        self._clock = clock
        self._tallies: dict[str, _Tally] = {}
        self._window_end = clock() + interval

    def refused(self, host: str, peer: str, reason: str, what: str = "rejected handshake") -> None:
        """Record one refusal of ``peer`` (``host`` is its address) for ``reason``."""
        self.tick(self._clock())
        tally = self._tallies.get(reason)
        if tally is None:
            tally = self._tallies[reason] = _Tally()
        tally.count += 1
        if len(tally.sources) < MAX_SOURCES:
            tally.sources.add(host)
        if tally.count <= self._first:
            self._log.info("%s from %s: %s", what, peer, reason)

    @property
    def deadline(self) -> float | None:
        """When the next summary is due, if any refusal awaits one (monotonic)."""
        if any(t.count > self._first for t in self._tallies.values()):
            return self._window_end
        return None

    def tick(self, now: float) -> None:
        """Close the window if it is over: one summary line per reason that went over."""
        if now >= self._window_end:
            self.summarise(now)

    def summarise(self, now: float) -> None:
        """Log the summary lines now (the window ends; at shutdown, nothing counted is lost)."""
        for reason, tally in self._tallies.items():
            hidden = tally.count - self._first
            if hidden > 0:
                self._log.warning(
                    "%d more refused in the last %.0f s (%d in all, from %s%d addresses): %s",
                    hidden,
                    self._interval,
                    tally.count,
                    "at least " if len(tally.sources) >= MAX_SOURCES else "",
                    len(tally.sources),
                    reason,
                )
        self._tallies.clear()
        self._window_end = now + self._interval
