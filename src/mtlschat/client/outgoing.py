"""What leaves the client, sans-I/O: long lines split at the room's limit, lines paced to its rate.

The welcome tells the client the room's ``limits`` (``max_line`` bytes, ``rate`` lines/s,
``burst``). The server drops a line over either limit (a too-long one with an error, a
rate-limited one with at most one notice per second), so the client keeps to them instead:
:func:`split_line` cuts a line the way irssi and weechat do, and :class:`Pacer` mirrors the
server's token bucket so that a paste or a piped file arrives whole. Pipe mode and the terminal
UI share both through :class:`~mtlschat.client.connection.Link`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtlschat.client.protocol import Event

RATE_LIMITED = "rate_limited"  # the server's error code for a line dropped by its bucket


@dataclass(frozen=True)
class RoomLimits:
    """The limits a welcome advertises; the defaults are what an old server without them used."""

    max_line: int = 2048
    rate: float = 0.0  # lines/s; 0 = unlimited
    burst: int = 1

    @classmethod
    def from_welcome(cls, event: Event) -> RoomLimits:
        """The ``limits`` of a welcome; anything missing or malformed keeps its default."""
        raw = event.data.get("limits")
        limits = raw if isinstance(raw, dict) else {}

        def number(key: str, default: float, low: float) -> float:
            value = limits.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= low:
                return float(value)
            return default

        return cls(
            max_line=int(number("max_line", cls.max_line, 16)),
            rate=number("rate", cls.rate, 0.0),
            burst=int(number("burst", cls.burst, 1)),
        )


class Pacer:
    """The server's token bucket, mirrored: when may the next line go so that none is dropped.

    It keeps one token in reserve (when the burst allows), so that lines bunched up by the
    network on their way still find a token at the server. It lives as long as the client: the
    server's bucket belongs to the name and outlives a reconnect.
    """

    def __init__(self) -> None:
        self.rate = 0.0
        self.burst = 1
        self._tokens = 0.0
        self._stamp: float | None = None  # None until the first welcome

    def configure(self, limits: RoomLimits, now: float) -> None:
        """Adopt the room's limits (from each welcome). The first welcome finds a full bucket."""
        if self._stamp is None:
            self._tokens = float(limits.burst)
        else:
            self._refill(now)
            self._tokens = min(self._tokens, float(limits.burst))
        self.rate, self.burst, self._stamp = limits.rate, limits.burst, now

    @property
    def _floor(self) -> float:
        return 1.0 + (1.0 if self.burst >= 2 else 0.0)

    def _refill(self, now: float) -> None:
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now if self._stamp is None else max(self._stamp, now)

    def delay(self, now: float) -> float:
        """Seconds to wait before the next line may be sent (0: now)."""
        if not self.rate:
            return 0.0
        self._refill(now)
        missing = self._floor - self._tokens
        return max(0.0, missing / self.rate)

    def take(self, now: float) -> None:
        """A line was sent."""
        if self.rate:
            self._refill(now)
            self._tokens -= 1.0

    def refused(self, now: float) -> None:
        """The server said ``rate_limited``: its bucket is empty, whatever we thought."""
        self._refill(now)
        self._tokens = 0.0

    def eta(self, lines: int, now: float) -> float:
        """Seconds until ``lines`` more lines have been sent at this pace."""
        if not self.rate or lines <= 0:
            return 0.0
        return self.delay(now) + (lines - 1) / self.rate


def _cut(text: str, limit: int) -> tuple[str, str]:
    """The longest head of ``text`` of at most ``limit`` UTF-8 bytes (never splitting a
    character), ending at a space when there is one in its second half; and the rest."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text, ""
    head = encoded[:limit].decode("utf-8", "ignore")  # drops a partial character at the end
    if not head:  # a limit smaller than one character: never loop forever
        return text[0], text[1:]
    if text[len(head)] == " ":  # the cut falls on a space already
        return head, text[len(head) + 1 :]
    space = head.rfind(" ")
    if space >= len(head) // 2:
        return head[:space], text[space + 1 :]
    return head, text[len(head) :]


def split_line(line: str, max_bytes: int) -> list[str]:
    """``line`` as lines of at most ``max_bytes`` UTF-8 bytes each, as the server counts them.

    Cut at a space where possible and never inside a character. ``/msg NAME`` and ``/me`` keep
    their command on every part, and a chat part that would start with ``/`` is escaped as
    ``//`` so the server does not take it for a command. Other commands are left whole (the
    server explains what is wrong with them).
    """
    if len(line.encode("utf-8")) <= max_bytes:
        return [line]
    word, _, rest = line.partition(" ")
    command = word.lower()
    if command == "/msg" and " " in rest.strip():
        target, _, text = rest.strip().partition(" ")
        prefix = f"{word} {target} "
    elif command == "/me" and rest.strip():
        prefix, text = f"{word} ", rest
    elif line.startswith("//"):
        prefix, text = "", line[1:]
    elif line.startswith("/"):
        return [line]
    else:
        prefix, text = "", line
    parts: list[str] = []
    budget = max(1, max_bytes - len(prefix.encode("utf-8")))
    while text:
        head, rest = _cut(text, budget)
        if not prefix and head.startswith("/"):  # needs a second '/': one byte less
            head, rest = _cut(text, max(1, budget - 1))
            head = "/" + head
        text = rest
        if head.strip():
            parts.append(prefix + head)
    return parts or [line]
