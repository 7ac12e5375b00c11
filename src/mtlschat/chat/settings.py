"""Room configuration and the room's counters (read by metrics later)."""

from __future__ import annotations

from dataclasses import dataclass

from mtlschat import __version__


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """The room's limits. The server fills these from flags / environment / TOML."""

    max_line: int = 2048  # bytes per client line, terminator excluded
    rate: float = 5.0  # chat lines per second per user name; 0 means unlimited
    burst: int = 20  # token-bucket depth, so a short multi-line paste goes through
    keepalive: float = 60.0  # seconds of client silence before a ping
    idle_timeout: float = 180.0  # seconds of client silence before the connection is closed
    # Join/leave lines go to everyone: N people joining cost N^2/2 lines. Above this many members
    # they are no longer announced (as large channels do); /who stays exact. 0: always announce.
    announce_limit: int = 500
    welcome_names: int = 100  # names listed in a welcome (plus the count); /who lists everyone
    server_version: str = f"mtlschat {__version__}"

    def __post_init__(self) -> None:
        if self.max_line < 1:
            raise ValueError("max_line must be at least 1")
        if self.rate < 0:
            raise ValueError("rate must be >= 0 (0 means unlimited)")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        if self.announce_limit < 0 or self.welcome_names < 0:
            raise ValueError("announce_limit and welcome_names must be >= 0")
        if self.keepalive <= 0 or self.idle_timeout <= 0:
            raise ValueError("keepalive and idle_timeout must be positive")


@dataclass(slots=True)
class RoomCounters:
    """Cumulative counts the room bumps as it works; cheap enough to leave on always."""

    sessions_opened: int = 0
    sessions_closed: int = 0
    messages: int = 0  # accepted msg / action / dm
    deliveries: int = 0  # server -> client lines handed out by flush()
    errors: int = 0  # error lines sent (bad commands, framing, rate limit)
    rate_limited: int = 0  # lines dropped by the rate limit
