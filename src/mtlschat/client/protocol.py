"""The client's side of the wire protocol, sans-I/O: JSON lines in, events and replies out.

See ``docs/protocol.md``. The client asks for JSON mode with ALPN and always sends plain lines.
Nothing here touches a socket or a terminal, so all of it is unit-tested directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mtlschat.ca.names import name_key
from mtlschat.chat.commands import COMMANDS as SERVER_COMMANDS
from mtlschat.chat.wire import clean_text

# For tab completion: the server's command table (a newer server may know more; those still work).
COMMANDS: tuple[str, ...] = tuple(
    sorted(f"/{name}" for name, command in SERVER_COMMANDS.items() if not command.hidden)
)


@dataclass(frozen=True)
class Event:
    """One server->client object. ``type`` is ``raw`` for a line that was not a JSON object."""

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    local: bool = False  # produced by this client (own line shown locally), not by the server

    def text(self, key: str, default: str = "") -> str:
        """Field ``key`` as a string (servers may add fields; wrong types degrade to text)."""
        value = self.data.get(key, default)
        return value if isinstance(value, str) else str(value)

    def names(self, key: str) -> list[str]:
        """Field ``key`` as a list of names (``online``)."""
        value = self.data.get(key)
        if not isinstance(value, list):
            return []
        return [v for v in value if isinstance(v, str)]

    def ts(self) -> float | None:
        """The event's server timestamp, if it has one."""
        value = self.data.get("ts")
        return float(value) if isinstance(value, int | float) else None


def parse_line(line: str) -> Event:
    """Decode one line from the server. Never raises: anything odd becomes a ``raw`` event."""
    line = line.rstrip("\r\n")
    try:
        obj = json.loads(line)
    except ValueError:
        return Event("raw", {"text": line})
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return Event("raw", {"text": line})
    return Event(obj["type"], obj)


# clean_text (the server's own cleaning: controls, bidi controls, line separators) is applied
# again here, since a client cannot assume its server is well-behaved; on top of it, the implicit
# direction marks go and lone surrogates (valid in JSON) cannot be printed.
_EXTRA = str.maketrans(
    {
        **dict.fromkeys((0x200E, 0x200F), None),
        **dict.fromkeys(range(0xD800, 0xE000), "\ufffd"),
        0x09: " ",
    }
)


def clean(text: str) -> str:
    """Make peer-supplied text safe to print: no escape sequences, newlines or bidi tricks.

    A peer could otherwise send ``\\x1b]...`` and drive the reader's terminal.
    """
    return text if text.isprintable() else clean_text(text).translate(_EXTRA)


def local_echo(line: str, me: str, now: float) -> Event | None:
    """The event to show for a line the user sends (the server does not echo chat lines).

    Commands are not echoed, except ``/me`` (shown as our action). ``/msg`` is echoed by the
    server as a ``dm``, so nothing is shown locally for it.
    """
    if not line.strip():
        return None
    if line.startswith("//"):
        return Event("msg", {"from": me, "text": line[1:], "ts": now}, local=True)
    if line.startswith("/"):
        cmd, _, rest = line.partition(" ")
        if cmd.lower() == "/me" and rest.strip():
            return Event("action", {"from": me, "text": rest, "ts": now}, local=True)
        return None
    return Event("msg", {"from": me, "text": line, "ts": now}, local=True)


_NO_RESUME = frozenset({"unknown_command", "no_history", "bad_usage"})


def is_quit(line: str) -> bool:
    """True if ``line`` is the ``/quit`` command (with or without a reason)."""
    return line.split(" ", 1)[0].lower() == "/quit"


_LINES = frozenset({"msg", "action", "dm"})  # the events with an offset (``id``)
MAX_ORIGINS = 32  # own sessions remembered for /resume (their lines were shown when typed)


class ChatState:
    """What the client knows about the room: its own name, who is online, and how far it has
    read the room's history (epoch and offset), so a reconnect recovers exactly what it missed.

    ``apply`` updates the state from a server event and returns the lines to send in reply
    (``/pong`` to a keepalive ``ping``); :meth:`receive` also says which events to show.
    """

    def __init__(self) -> None:
        self.me = ""
        self._online: dict[str, str] = {}  # name_key -> name as the server spells it
        self.bye_reason: str | None = None
        self.epoch: str | None = None  # the server's history epoch (None: it keeps none)
        self.offset = 0  # the last room offset we have shown (or skipped as not for us)
        self.origins: list[int] = []  # our sessions' origins: the server does not replay those
        self.resuming = False  # a /resume is under way: live lines wait in ``_held``
        self._held: list[Event] = []
        self._reset = False  # the welcome showed a new epoch: say so once

    def receive(self, event: Event) -> tuple[list[str], list[Event]]:
        """Update from ``event``: the lines to send back, and the events to show (none, the
        event itself, or lines held back while missed ones were recovered).
        """
        replies = self.apply(event)
        kind = event.type
        if kind == "welcome":
            return replies + self._welcome(event), [event, *self._reset_notice(event)]
        if kind in _LINES:
            return replies, self._line(event)
        if kind == "resumed":
            return replies, self._resumed(event)
        if kind == "error" and self.resuming and event.text("code") in _NO_RESUME:
            self.resuming = False  # an older server: carry on live
            return replies, [event, *self._release(0)]
        return replies, [event]

    def _welcome(self, event: Event) -> list[str]:
        info = event.data.get("resume")
        self._held = []
        self.resuming = False
        if not isinstance(info, dict):
            self.epoch = None  # no history here: nothing to resume
            return []
        epoch, offset, origin = info.get("epoch"), info.get("offset"), info.get("origin")
        if not isinstance(epoch, str) or not isinstance(offset, int):
            return []
        if isinstance(origin, int):
            self.origins = [*self.origins, origin][-MAX_ORIGINS:]
        if epoch == self.epoch and epoch.isalnum():
            self.resuming = True
            own = ",".join(map(str, self.origins[:-1]))
            return [f"/resume {epoch} {self.offset} {own}".rstrip()]
        self._reset = self.epoch is not None  # the server's history is not the one we knew
        self.epoch = epoch
        self.offset = offset
        return []

    def _reset_notice(self, event: Event) -> list[Event]:
        if not self._reset:
            return []
        self._reset = False
        text = "history was reset on the server: what was said while you were away is gone"
        return [Event("error", {"code": "history_reset", "text": text}, local=True)]

    def _line(self, event: Event) -> list[Event]:
        source = event.data.get("history")
        ident = event.data.get("id")
        if source in ("join", "request", "search"):
            # Asked-for history: shown as such; a resuming client recovers precisely instead.
            return [] if self.resuming and source == "join" else [event]
        if self.resuming and source is None:
            self._held.append(event)  # live: shown after the lines it missed
            return []
        if isinstance(ident, int) and not isinstance(ident, bool):
            if ident <= self.offset:
                return []  # already shown
            self.offset = ident
        return [event]

    def _resumed(self, event: Event) -> list[Event]:
        self.resuming = False
        epoch, offset = event.data.get("epoch"), event.data.get("offset")
        shown: list[Event] = []
        if event.data.get("reset") is True:
            if isinstance(epoch, str):
                self.epoch = epoch
            shown.append(event)
        elif isinstance(event.data.get("count"), int) and event.data["count"] > 0:
            shown.append(event)
        if isinstance(offset, int):
            # The server's word, even below ours: a history that lost its last lines (a power
            # cut) hands their offsets out again, and those new lines must not look like repeats.
            self.offset = offset
        return shown + self._release(self.offset)

    def _release(self, upto: int) -> list[Event]:
        held, self._held = self._held, []
        shown: list[Event] = []
        for event in held:
            ident = event.data.get("id")
            if isinstance(ident, int) and ident <= upto:
                continue  # the recovery had it
            if isinstance(ident, int):
                self.offset = max(self.offset, ident)
            shown.append(event)
        return shown

    @property
    def online(self) -> list[str]:
        """Online names, sorted case-insensitively."""
        return sorted(self._online.values(), key=name_key)

    def _set_online(self, names: list[str]) -> None:
        self._online = {name_key(n): n for n in names}

    def apply(self, event: Event) -> list[str]:
        """Update from ``event``; return lines to send back."""
        kind = event.type
        if kind == "welcome":
            self.me = event.text("name")
            self._set_online(event.names("online"))
            self.bye_reason = None
        elif kind == "who":
            self._set_online(event.names("online"))
        elif kind == "join":
            name = event.text("name")
            self._online[name_key(name)] = name
        elif kind == "leave":
            self._online.pop(name_key(event.text("name")), None)
        elif kind == "bye":
            self.bye_reason = event.text("reason")
        elif kind == "ping":
            return ["/pong"]
        return []
