"""Event -> line, sans-I/O: plain text for pipe mode, styled fragments for the terminal UI.

Everything a peer supplied goes through :func:`~mtlschat.client.protocol.clean` first.
"""

from __future__ import annotations

import time
import zlib

from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.styles import Style

from mtlschat.ca.names import name_key
from mtlschat.client.protocol import Event, clean

# Readable on dark and light terminals; red is kept for errors and magenta for DMs.
_NAME_COLOURS = (
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansicyan",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
    "ansibrightcyan",
    "#d78700",
    "#5f87ff",
    "#00af87",
    "#af87d7",
)

STYLE = Style.from_dict(
    {
        "ts": "fg:ansibrightblack",
        "me": "bold",
        "notice": "fg:ansibrightblack italic",
        "status": "fg:ansiyellow",
        "error": "fg:ansired bold",
        "dm": "fg:ansimagenta",
        "dm.label": "fg:ansimagenta bold reverse",
        "action": "italic",
        "prompt": "bold",
    }
)

# Event types that are not shown (keepalives are answered silently).
_SILENT = frozenset({"ping"})


def name_colour(name: str) -> str:
    """A stable colour for ``name``: the same in every run and on every machine."""
    return _NAME_COLOURS[zlib.crc32(name_key(name).encode()) % len(_NAME_COLOURS)]


def clock(ts: float | None) -> str:
    """``HH:MM:SS`` in local time (now if the event has no timestamp)."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(time.time() if ts is None else ts))
    except (OverflowError, ValueError, OSError):  # NaN, or a year out of range: a broken server
        return "--:--:--"


def _names(names: list[str]) -> str:
    return ", ".join(clean(n) for n in names) or "nobody"


def _notice_text(event: Event) -> str | None:
    """The text of a notice-like event (everything but messages), without prefix."""
    kind = event.type
    if kind == "welcome":
        online = event.names("online")
        count = event.data.get("online_count")
        more = count - len(online) if isinstance(count, int) else 0
        extra = f" and {more} more (/who lists everyone)" if more > 0 else ""
        return f"welcome {clean(event.text('name'))}. online: {_names(online)}{extra}"
    if kind == "join":
        return f"{clean(event.text('name'))} joined"
    if kind == "leave":
        reason = clean(event.text("reason"))
        return f"{clean(event.text('name'))} left" + (f" ({reason})" if reason else "")
    if kind == "who":
        return f"online: {_names(event.names('online'))}"
    if kind == "info":
        return clean(event.text("text"))
    if kind == "bye":
        return f"bye: {clean(event.text('reason'))}"
    if kind == "error":
        return clean(event.text("text") or event.text("code"))
    return None


def render_plain(event: Event, *, timestamps: bool = False) -> list[str]:
    """Plain lines for ``event`` (pipe mode): the server's text-mode format, one line per message.

    Multi-line ``info`` text (``/help``) gives one line per text line; keepalives give none.
    """
    kind = event.type
    if kind in _SILENT:
        return []
    prefix = f"[{clock(event.ts())}] " if timestamps and event.ts() is not None else ""
    sender = clean(event.text("from"))
    body = clean(event.text("text"))
    if kind == "msg":
        return [f"{prefix}<{sender}> {body}"]
    if kind == "action":
        return [f"{prefix}* {sender} {body}"]
    if kind == "dm":
        return [f"{prefix}[dm] <{sender}> -> {clean(event.text('to'))}: {body}"]
    if kind == "raw":
        return [body]
    if kind == "info":
        return [f"* {clean(part)}" for part in event.text("text").splitlines() or [""]]
    text = _notice_text(event)
    if text is None:  # a type from a newer server: unknown types are ignored
        return []
    return [f"{prefix}{'!' if kind == 'error' else '*'} {text}"]


def render_styled(event: Event, me: str = "") -> FormattedText | None:
    """Styled fragments for ``event`` in the terminal UI (``None``: nothing to show)."""
    kind = event.type
    if kind in _SILENT:
        return None
    ts: list[tuple[str, str]] = [("class:ts", clock(event.ts()) + " ")]
    sender = clean(event.text("from"))
    body = clean(event.text("text"))
    own = bool(me) and name_key(sender) == name_key(me)
    who = f"fg:{name_colour(sender)} bold" + (" underline" if own else "")
    if kind == "msg":
        return FormattedText([*ts, (who, f"<{sender}>"), ("", f" {body}")])
    if kind == "action":
        return FormattedText(
            [*ts, ("class:action", "* "), (who, sender), ("class:action", f" {body}")]
        )
    if kind == "dm":
        to = clean(event.text("to"))
        peer = to if own else sender
        arrow = f" to {peer}: " if own else f" from {peer}: "
        return FormattedText(
            [*ts, ("class:dm.label", " private "), ("class:dm", arrow), ("class:dm", body)]
        )
    if kind == "raw":
        return FormattedText([("", body)])
    if kind == "error":
        return FormattedText([*ts, ("class:error", f"! {_notice_text(event)}")])
    text = _notice_text(event)
    if text is None:
        return None
    lines = text.splitlines() or [""]
    return FormattedText([*ts, ("class:notice", "-- " + "\n   ".join(lines))])


def render_status(text: str, *, error: bool = False) -> FormattedText:
    """A line about the connection itself (connecting, lost, reconnecting), styled apart."""
    return FormattedText(
        [
            ("class:ts", clock(None) + " "),
            ("class:error" if error else "class:status", f"** {text}"),
        ]
    )
