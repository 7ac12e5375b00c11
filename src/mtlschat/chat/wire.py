"""Everything the server sends, and how it looks on the wire: text lines and JSON lines.

One class per protocol message type (see ``docs/protocol.md``); each renders itself as one text
line (for people) and one JSON line (for programs), both terminated by ``\\n``. The room builds
these objects and encodes each broadcast once per output mode, never once per peer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from json.encoder import encode_basestring as _json_str  # C-accelerated in CPython

from mtlschat.chat.framing import BAD_UTF8, LINE_TOO_LONG

ALPN_TEXT = "mtlschat-text/1"
ALPN_JSON = "mtlschat-json/1"

# The protocol's error codes (``error`` messages).
UNKNOWN_COMMAND = "unknown_command"
BAD_USAGE = "bad_usage"
UNKNOWN_USER = "unknown_user"
RATE_LIMITED = "rate_limited"
BAD_NAME = "bad_name"
ERROR_CODES = (
    UNKNOWN_COMMAND,
    BAD_USAGE,
    UNKNOWN_USER,
    LINE_TOO_LONG,
    BAD_UTF8,
    RATE_LIMITED,
    BAD_NAME,
)


class Mode(IntEnum):
    """What the server sends to a session. An IntEnum so it can index per-mode lists cheaply."""

    TEXT = 0
    JSON = 1

    @classmethod
    def from_alpn(cls, protocol: str | None) -> Mode:
        """The mode a client asked for with ALPN (none or unknown means text)."""
        return cls.JSON if protocol == ALPN_JSON else cls.TEXT

    @classmethod
    def parse(cls, word: str) -> Mode | None:
        """``"text"`` / ``"json"`` (any case) as used by ``/mode``; None if neither."""
        word = word.lower()
        if word == "text":
            return cls.TEXT
        if word == "json":
            return cls.JSON
        return None


ALPN_PROTOCOLS = (ALPN_JSON, ALPN_TEXT)  # what the server offers, in preference order


# Control characters in chat text would let one member drive another's terminal (text mode is read
# raw, e.g. through openssl s_client). Tab is harmless; every other C0, DEL and C1 is replaced.
_CONTROLS = {c: "\ufffd" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}


def clean_text(text: str) -> str:
    """``text`` with control characters replaced (fast path: printable text is returned as is)."""
    return text if text.isprintable() else text.translate(_CONTROLS)


def shorten(text: str, limit: int = 40) -> str:
    """``text`` cleaned and cut to ``limit`` characters, for echoing user input in notices."""
    text = clean_text(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@lru_cache(maxsize=64)
def _hms(second: int) -> str:
    # Text-mode clock: UTC, seconds resolution. Cached because a busy room stamps many lines per
    # second and all of them share the same prefix.
    s = second % 86400
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def _dumps(obj: dict[str, object]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class Event:
    """A server -> client protocol message."""

    __slots__ = ()

    def text(self) -> bytes:
        """The human-readable line, ``\\n``-terminated."""
        raise NotImplementedError

    def json(self) -> bytes:
        """The JSON line, ``\\n``-terminated."""
        raise NotImplementedError

    def encode(self, mode: Mode) -> bytes:
        """The line for ``mode``."""
        return self.json() if mode else self.text()


# The three chat messages are the hot path: hand-built JSON (names obey the username policy so
# need no escaping; free text goes through the C string encoder), equal to json.dumps' output.


@dataclass(slots=True)
class Msg(Event):
    """A chat line from ``sender``."""

    id: int
    ts: float
    sender: str
    body: str

    def text(self) -> bytes:
        return f"[{_hms(int(self.ts))}] <{self.sender}> {self.body}\n".encode()

    def json(self) -> bytes:
        return (
            f'{{"type":"msg","id":{self.id},"ts":{self.ts!r},"from":"{self.sender}",'
            f'"text":{_json_str(self.body)}}}\n'
        ).encode()


@dataclass(slots=True)
class Action(Event):
    """A ``/me`` line from ``sender``."""

    id: int
    ts: float
    sender: str
    body: str

    def text(self) -> bytes:
        return f"[{_hms(int(self.ts))}] * {self.sender} {self.body}\n".encode()

    def json(self) -> bytes:
        return (
            f'{{"type":"action","id":{self.id},"ts":{self.ts!r},"from":"{self.sender}",'
            f'"text":{_json_str(self.body)}}}\n'
        ).encode()


@dataclass(slots=True)
class Dm(Event):
    """A private message (delivered to the target's sessions and echoed to the sender's)."""

    id: int
    ts: float
    sender: str
    to: str
    body: str

    def text(self) -> bytes:
        return f"[{_hms(int(self.ts))}] [dm] <{self.sender}> -> {self.to}: {self.body}\n".encode()

    def json(self) -> bytes:
        return (
            f'{{"type":"dm","id":{self.id},"ts":{self.ts!r},"from":"{self.sender}",'
            f'"to":"{self.to}","text":{_json_str(self.body)}}}\n'
        ).encode()


@dataclass(slots=True)
class Welcome(Event):
    """First line of every session: who you are, who is here, the server's limits."""

    name: str
    online: list[str]  # the first names (sorted); ``online_count`` says how many there are
    online_count: int
    server: str
    max_line: int
    rate: float
    burst: int
    keepalive: float
    idle_timeout: float

    def text(self) -> bytes:
        who = ", ".join(self.online)
        if (more := self.online_count - len(self.online)) > 0:
            who += f" and {more} more (/who lists everyone)"
        return (
            f"* welcome {self.name}. online: {who} ({self.server}; /help for commands)\n".encode()
        )

    def json(self) -> bytes:
        return _dumps(
            {
                "type": "welcome",
                "name": self.name,
                "online": self.online,
                "online_count": self.online_count,
                "server": self.server,
                "limits": {
                    "max_line": self.max_line,
                    "rate": self.rate,
                    "burst": self.burst,
                    "keepalive": self.keepalive,
                    "idle_timeout": self.idle_timeout,
                },
            }
        )


@dataclass(slots=True)
class Join(Event):
    """``name`` joined (its first session)."""

    ts: float
    name: str

    def text(self) -> bytes:
        return f"* {self.name} joined\n".encode()

    def json(self) -> bytes:
        return _dumps({"type": "join", "ts": self.ts, "name": self.name})


@dataclass(slots=True)
class Leave(Event):
    """``name`` left (its last session), and why."""

    ts: float
    name: str
    reason: str

    def text(self) -> bytes:
        return f"* {self.name} left ({self.reason})\n".encode()

    def json(self) -> bytes:
        return _dumps({"type": "leave", "ts": self.ts, "name": self.name, "reason": self.reason})


@dataclass(slots=True)
class Who(Event):
    """The answer to ``/who``."""

    online: list[str]

    def text(self) -> bytes:
        return f"* online: {', '.join(self.online)}\n".encode()

    def json(self) -> bytes:
        return _dumps({"type": "who", "online": self.online})


@dataclass(slots=True)
class Info(Event):
    """Informational text (``/help`` output, mode changes...)."""

    body: str

    def text(self) -> bytes:
        return f"* {self.body}\n".encode()

    def json(self) -> bytes:
        return _dumps({"type": "info", "text": self.body})


@dataclass(slots=True)
class Error(Event):
    """The client's last line was refused; ``code`` is one of the protocol's error codes."""

    code: str
    body: str

    def text(self) -> bytes:
        return f"! {self.body}\n".encode()

    def json(self) -> bytes:
        return _dumps({"type": "error", "code": self.code, "text": self.body})


@dataclass(slots=True)
class Ping(Event):
    """Keepalive: any line from the client answers it."""

    ts: float

    def text(self) -> bytes:
        return b"* ping: any line (or /pong) keeps you connected\n"

    def json(self) -> bytes:
        return _dumps({"type": "ping", "ts": self.ts})


@dataclass(slots=True)
class Bye(Event):
    """The server is closing this connection."""

    reason: str

    def text(self) -> bytes:
        return f"* bye: {self.reason}\n".encode()

    def json(self) -> bytes:
        return _dumps({"type": "bye", "reason": self.reason})
