"""The event loop's own counters: plain ints the loop bumps, read by the metrics exporter.

Deliberately dumb: the loop pays an integer add, never a lock or a library call; the exporter
(:mod:`mtlschat.net.metrics`) reads them in its own thread at scrape time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

MAX_REASONS = 64  # distinct refusal reasons kept apart; the rest are counted as "other"


@dataclass(slots=True)
class LoopStats:
    """Cumulative transport counts of one server process."""

    bytes_in: int = 0  # plaintext bytes read from clients
    bytes_out: int = 0  # plaintext bytes written to clients
    handshakes_ok: int = 0
    handshakes_refused: dict[str, int] = field(default_factory=dict)  # by reason
    slow_consumers: int = 0  # clients cut off for not reading
    over_capacity: int = 0  # connections closed at once: max-connections reached
    reloads_ok: int = 0
    reloads_failed: int = 0
    heartbeat: float = field(default_factory=time.monotonic)  # last tick of the loop

    def refused(self, reason: str) -> None:
        """Count one refused handshake under ``reason`` (a bounded set of labels)."""
        counts = self.handshakes_refused
        if reason not in counts and len(counts) >= MAX_REASONS:
            reason = "other"
        counts[reason] = counts.get(reason, 0) + 1
