"""What a benchmark runs (a workload's parameters) and the error for one that cannot run."""

from __future__ import annotations

from dataclasses import dataclass

from mtlschat.bench import WORKLOADS
from mtlschat.bench.payload import DEFAULT_SIZE, HEADER_SIZE, MAX_SENDERS

MAX_SOURCES = 250  # 127.0.0.2 .. 127.0.0.251


class BenchError(RuntimeError):
    """The benchmark could not run (bad parameters, or the load processes failed)."""


@dataclass(frozen=True)
class Workload:
    """What to run. ``messages`` is per sender (burst, hold); paced sends ``rate * duration``.

    ``storm`` connects the receivers, restarts the server under them and paces
    ``rate * duration`` lines from a sender that reconnects first, while every receiver comes
    back with the real client's backoff.
    """

    kind: str = "burst"
    receivers: int = 200
    messages: int = 10_000
    size: int = DEFAULT_SIZE
    rate: float = 300.0  # paced: total messages/s over all senders
    duration: float = 10.0  # paced: seconds
    senders: int = 1
    workers: int = 2
    concurrency: int = 256  # handshakes in flight at once, over all workers
    write_size: int = 0  # burst: bytes per sender write (whole lines); 0 = the sender's default
    verify: str = "fast"  # "fast" (strided checks, one sender) or "full" (parse every line)
    stall: float = 20.0  # give up after this many seconds without progress
    # Loopback source addresses to spread receivers over (127.0.0.2, 127.0.0.3, ...): each
    # (source, server) pair has one ephemeral port range. 0 = as many as the count needs.
    sources: int = 0
    # Certificates for the receivers, used in turn (a name may have several sessions, up to
    # the server's --sessions-per-name); 0 = one each.
    names: int = 0

    @property
    def certificates(self) -> int:
        """How many receiver certificates the workload needs."""
        return min(self.names, self.receivers) if self.names else self.receivers

    def check(self) -> None:
        """Raise :class:`BenchError` for parameters that cannot work."""
        if self.kind not in WORKLOADS:
            raise BenchError(f"unknown workload {self.kind!r}: choose from {', '.join(WORKLOADS)}")
        if self.receivers < 1 or self.workers < 1 or self.concurrency < 1:
            raise BenchError("receivers, workers and concurrency must be at least 1")
        if not 1 <= self.senders < MAX_SENDERS:
            raise BenchError(f"senders must be between 1 and {MAX_SENDERS - 1}")
        if self.size < HEADER_SIZE:
            raise BenchError(f"the message size must be at least {HEADER_SIZE} bytes")
        if self.kind in ("paced", "storm") and (self.rate <= 0 or self.duration <= 0):
            raise BenchError(f"{self.kind} needs a positive --rate and --duration")
        if self.kind in ("burst", "hold") and self.messages < 1:
            raise BenchError("send at least one message")
        if self.names < 0:
            raise BenchError("names must be 0 (one per receiver) or more")
        if self.sources < 0 or self.sources > MAX_SOURCES:
            raise BenchError(f"sources must be between 0 (automatic) and {MAX_SOURCES}")
        if self.verify not in ("fast", "full"):
            raise BenchError("verify must be 'fast' or 'full'")

    @property
    def per_sender(self) -> int:
        """How many messages each sender sends."""
        if self.kind == "connect":
            return 0
        if self.kind in ("paced", "storm"):
            return max(1, round(self.rate * self.duration / self.senders))
        return self.messages
