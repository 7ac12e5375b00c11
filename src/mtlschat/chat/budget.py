"""What each user name may spend: token buckets for chat lines, for input of any kind, for joins.

A name's budget belongs to the name, not to a session: it survives the name's last session
leaving (a loop of connect, 20 lines, quit must not refill it), and the room forgets it only once
every bucket is full again, when forgetting it gives nothing back. All times are monotonic
seconds (a wall-clock step must neither drain nor refill a bucket).
"""

from __future__ import annotations

# Every input line (a chat line, a command, /pong, a blank or whitespace-only line, a refused
# line) costs one token of the input bucket, which is this many times the chat bucket (rate and
# depth): well above what a client pacing itself to the advertised rate sends, low enough that a
# flood is dropped in bulk rather than handled line by line.
INPUT_FACTOR = 4
# Lines dropped over the input budget draw from a third bucket, this many times the input bucket's
# depth (2,000 lines at the defaults), refilled at the input rate: a client that keeps sending
# well over its budget is disconnected ("flooding") instead of costing the server a read and a
# decrypt for every record it sends. A paste over the budget only loses its tail.
FLOOD_FACTOR = 25


class TokenBucket:
    """``rate`` tokens per second, at most ``depth`` held; starts full."""

    __slots__ = ("depth", "rate", "stamp", "tokens")

    def __init__(self, rate: float, depth: float, now: float) -> None:
        self.rate = rate
        self.depth = depth
        self.tokens = depth
        self.stamp = now

    def refill(self, now: float) -> float:
        """Top the bucket up to ``now``; return the tokens held."""
        if now > self.stamp:
            self.tokens = min(self.depth, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        if self.refill(now) >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def take_up_to(self, now: float, n: int) -> int:
        """Take up to ``n`` tokens; return how many were taken."""
        taken = min(n, int(self.refill(now)))
        self.tokens -= taken
        return taken

    def full(self, now: float) -> bool:
        """Whether the bucket is full (as if never used) at ``now``."""
        return self.refill(now) >= self.depth


class NameBudget:
    """One user name's buckets; ``None`` where the setting disables the limit (rate 0)."""

    __slots__ = ("input", "joins", "lines", "overrun")

    def __init__(self, rate: float, burst: int, join_rate: float, join_burst: int, now: float):
        self.lines = TokenBucket(rate, burst, now) if rate else None
        self.input = TokenBucket(rate * INPUT_FACTOR, burst * INPUT_FACTOR, now) if rate else None
        self.overrun = (
            TokenBucket(rate * INPUT_FACTOR, burst * INPUT_FACTOR * FLOOD_FACTOR, now)
            if rate
            else None
        )
        self.joins = TokenBucket(join_rate, join_burst, now) if join_rate else None

    def spent(self, now: float) -> bool:
        """Whether any bucket is below full: forgetting this budget would give tokens back."""
        buckets = (self.lines, self.input, self.overrun, self.joins)
        return any(b is not None and not b.full(now) for b in buckets)
