"""Everything the server sends, and how it looks on the wire: text lines and JSON lines.

One class per protocol message type (see ``docs/protocol.md``); each renders itself as one text
line (for people) and one JSON line (for programs), both terminated by ``\\n``. The room builds
these objects and encodes each broadcast once per output mode, never once per peer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from json.encoder import encode_basestring as _json_str  # C-accelerated in CPython

from mtlschat.chat.framing import BAD_UTF8, LINE_TOO_LONG
from mtlschat.history.journal import Gap
from mtlschat.history.store import ACTION, DM, MSG, Record

ALPN_TEXT = "mtlschat-text/1"
ALPN_JSON = "mtlschat-json/1"

# The protocol's error codes (``error`` messages).
UNKNOWN_COMMAND = "unknown_command"
BAD_USAGE = "bad_usage"
UNKNOWN_USER = "unknown_user"
RATE_LIMITED = "rate_limited"
BAD_NAME = "bad_name"
NO_HISTORY = "no_history"
TOO_MANY_SESSIONS = "too_many_sessions"
TOO_MANY_JOINS = "too_many_joins"
BANNED = "banned"  # refused at join: an operator banned the name
MUTED = "muted"  # a room-wide line from a muted member, dropped
NOT_OPERATOR = "not_operator"  # an operator command from someone who is not one
NOT_DELIVERED = "not_delivered"  # a line the room could not deliver (several nodes: Redis down)
ERROR_CODES = (
    UNKNOWN_COMMAND,
    BAD_USAGE,
    UNKNOWN_USER,
    LINE_TOO_LONG,
    BAD_UTF8,
    RATE_LIMITED,
    BAD_NAME,
    NO_HISTORY,
    TOO_MANY_SESSIONS,
    TOO_MANY_JOINS,
    BANNED,
    MUTED,
    NOT_OPERATOR,
    NOT_DELIVERED,
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
# So are the bidi embeddings, overrides and isolates (U+202A-E, U+2066-9), which make a line read
# differently from what was sent ("Trojan source"), and the line and paragraph separators (U+2028/9)
# that break "one line per message" in some terminals and JSON viewers. All of these fail
# str.isprintable(), so printable text still takes the fast path untouched.
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CONTROLS = {
    c: "\ufffd"
    for c in (*range(0x20), *range(0x7F, 0xA0), *map(ord, BIDI_CONTROLS), 0x2028, 0x2029)
    if c != 0x09
}


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
class Lines(Event):
    """Room lines (``kind`` MSG, or ACTION for ``/me``) said by ``sender`` at ``ts``, with the
    ids ``id``, ``id + 1``, ...: one line each on the wire. A burst from one member is one event,
    encoded in one pass (one head for all its lines) and skipped at once for its sender."""

    kind: str
    id: int  # the first line's
    ts: float
    sender: str
    bodies: list[str]

    def text(self) -> bytes:
        clock = _hms(int(self.ts))
        head = f"[{clock}] <{self.sender}> " if self.kind == MSG else f"[{clock}] * {self.sender} "
        return (head + ("\n" + head).join(self.bodies) + "\n").encode()

    def json(self) -> bytes:
        start = f'{{"type":"{self.kind}","id":'
        rest = f',"ts":{self.ts!r},"from":"{self.sender}","text":'
        ids = range(self.id, self.id + len(self.bodies))
        return "".join(
            [f"{start}{i}{rest}{_json_str(b)}}}\n" for i, b in zip(ids, self.bodies, strict=True)]
        ).encode()


def Msg(id: int, ts: float, sender: str, body: str) -> Lines:
    """One chat line from ``sender``."""
    return Lines(MSG, id, ts, sender, [body])


def Action(id: int, ts: float, sender: str, body: str) -> Lines:
    """One ``/me`` line from ``sender``."""
    return Lines(ACTION, id, ts, sender, [body])


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
    # With history on: (epoch, last offset, this session's origin), for /resume after a drop.
    resume: tuple[str, int, int] | None = None

    def text(self) -> bytes:
        who = ", ".join(self.online)
        if (more := self.online_count - len(self.online)) > 0:
            who += f" and {more} more (/who lists everyone)"
        return (
            f"* welcome {self.name}. online: {who} ({self.server}; /help for commands)\n".encode()
        )

    def json(self) -> bytes:
        obj: dict[str, object] = {
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
        if self.resume is not None:
            epoch, offset, origin = self.resume
            obj["resume"] = {"epoch": epoch, "offset": offset, "origin": origin}
        return _dumps(obj)


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


# ---- history (docs/protocol.md, "History") ---------------------------------------------------


def _when(ts: float) -> str:
    """Text-mode date and time of a history line: UTC, like every text-mode clock."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
    except (OverflowError, ValueError, OSError):
        return "????-??-?? ??:??:??"


@dataclass(slots=True)
class Replayed(Event):
    """A stored line sent again: on join, for ``/history``, ``/search`` or ``/resume``.

    JSON: the line's own object (``msg``, ``action``, ``dm``) plus ``"history": SOURCE``. Text:
    the live format with the full date, so it cannot be mistaken for something said just now.
    """

    record: Record
    source: str  # "join", "request" (/history), "search" or "resume"

    def text(self) -> bytes:
        r = self.record
        when = _when(r.ts)
        if r.kind == ACTION:
            return f"[{when}] * {r.sender} {r.text}\n".encode()
        if r.kind == DM:
            return f"[{when}] [dm] <{r.sender}> -> {r.to}: {r.text}\n".encode()
        return f"[{when}] <{r.sender}> {r.text}\n".encode()

    def json(self) -> bytes:
        r = self.record
        obj: dict[str, object] = {"type": r.kind, "id": r.offset, "ts": r.ts, "from": r.sender}
        if r.kind == DM:
            obj["to"] = r.to
        obj["text"] = r.text
        obj["history"] = self.source
        return _dumps(obj)


@dataclass(slots=True)
class HistoryStart(Event):
    """Announces ``count`` history lines (they follow, oldest first)."""

    source: str  # "join", "request" or "search"
    count: int
    query: str = ""  # the words of a /search

    def text(self) -> bytes:
        lines = "line" if self.count == 1 else f"{self.count} lines"
        if self.source == "search":
            if not self.count:
                return f"* search: no line matches {self.query}\n".encode()
            return f"* search: the last {lines} matching {self.query}\n".encode()
        if not self.count:
            return b"* history: nothing yet\n"
        return f"* history: the last {lines} (/history N for more)\n".encode()

    def json(self) -> bytes:
        obj: dict[str, object] = {"type": "history", "source": self.source, "count": self.count}
        if self.source == "search":
            obj["query"] = self.query
        return _dumps(obj)


@dataclass(slots=True)
class HistoryEnd(Event):
    """Text mode only: where history lines end and the live room resumes."""

    def text(self) -> bytes:
        return b"* end of history\n"

    def json(self) -> bytes:
        return b""  # JSON lines carry "history" themselves


def _gap_text(gap: Gap) -> str:
    if gap.reason == "too_many":
        return (
            f"{gap.last - gap.first + 1} earlier lines were not replayed (too many missed);"
            " /history N or /search shows them"
        )
    if gap.since is None and gap.until is None:
        return "some history is not available"
    if gap.since is None:
        return f"history before {_when(gap.until or 0)[:16]} is not available"
    start = _when(gap.since)[:16]
    end = _when(gap.until)[:16] if gap.until is not None else "now"
    if end[:10] == start[:10]:  # the same day: times only
        start, end = start[11:], end[11:]
    return f"history from {start} to {end} is not available"


@dataclass(slots=True)
class GapNotice(Event):
    """Lines ``first..last`` cannot be replayed (trimmed by retention, lost, or too many)."""

    gap: Gap

    def text(self) -> bytes:
        return f"! {_gap_text(self.gap)}\n".encode()

    def json(self) -> bytes:
        g = self.gap
        return _dumps(
            {
                "type": "gap",
                "first": g.first,
                "last": g.last,
                "since": g.since,
                "until": g.until,
                "reason": g.reason,
                "text": _gap_text(g),
            }
        )


@dataclass(slots=True)
class Resumed(Event):
    """The end of a ``/resume``: the client has now seen everything up to ``offset``."""

    epoch: str
    offset: int
    count: int  # lines replayed
    reset: bool  # the client's epoch is not the store's: its history is gone

    def text(self) -> bytes:
        if self.reset:
            return b"* history was reset: earlier lines are not available\n"
        return f"* resumed: {self.count} missed lines\n".encode()

    def json(self) -> bytes:
        return _dumps(
            {
                "type": "resumed",
                "epoch": self.epoch,
                "offset": self.offset,
                "count": self.count,
                "reset": self.reset,
            }
        )
