"""Reconnect delays: exponential backoff with jitter, sans-I/O."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays of ``initial * factor**n`` seconds, capped, each with up to 25 % jitter.

    The jitter spreads out a room full of clients that all lost the same server at once.
    """

    def __init__(
        self,
        initial: float = 0.5,
        factor: float = 2.0,
        cap: float = 10.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.factor = factor
        self.cap = cap
        self._rand = rand
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        base = min(self.cap, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return base * (1.0 - 0.25 * self._rand())

    def reset(self) -> None:
        """A connection succeeded: start again from the initial delay."""
        self.attempt = 0
