"""Event -> line, sans-I/O: plain text for pipe mode, styled fragments for the terminal UI.

Everything a peer supplied goes through :func:`~mtlschat.client.protocol.clean` first.
"""

from __future__ import annotations

import re
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
        "mention": "reverse bold",
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
    if kind == "history":
        return _history_text(event)
    if kind == "gap":
        return _gap_text(event)
    if kind == "resumed":
        if event.data.get("reset") is True:
            return "history was reset on the server: what was said while you were away is gone"
        return f"recovered {event.text('count')} missed lines"
    return None


def _history_text(event: Event) -> str:
    count = event.data.get("count")
    if event.text("source") == "search":
        query = clean(event.text("query"))
        return f"search {query}: {count} lines" if count else f"search {query}: no line matches"
    return f"history: the last {count} lines" if count else "history: nothing yet"


def _gap_text(event: Event) -> str:
    if event.text("reason") == "too_many":
        return clean(event.text("text"))
    since, until = event.data.get("since"), event.data.get("until")
    end = date_clock(until)[:16] if isinstance(until, int | float) else "now"
    if not isinstance(since, int | float):
        return f"history before {end} is not available"
    start = date_clock(since)[:16]
    if start[:10] == end[:10] or (end == "now" and start[:10] == date_clock(None)[:10]):
        start, end = start[11:], end[11:] or end  # the same day: times only
    return f"history from {start} to {end} is not available"


def date_clock(ts: float | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in local time: how history lines are dated."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if ts is None else ts))
    except (OverflowError, ValueError, OSError):
        return "----------- --:--:--"


def _is_history(event: Event) -> bool:
    """A line replayed from history on request (join, /history, /search): shown dated."""
    return event.data.get("history") in ("join", "request", "search")


def render_plain(event: Event, *, timestamps: bool = False) -> list[str]:
    """Plain lines for ``event`` (pipe mode): the server's text-mode format, one line per message.

    Multi-line ``info`` text (``/help``) gives one line per text line; keepalives give none.
    """
    kind = event.type
    if kind in _SILENT:
        return []
    prefix = f"[{clock(event.ts())}] " if timestamps and event.ts() is not None else ""
    if _is_history(event):
        prefix = f"[{date_clock(event.ts())}] "
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
    return [f"{prefix}{'!' if kind in ('error', 'gap') else '*'} {text}"]


def render_styled(event: Event, me: str = "") -> FormattedText | None:
    """Styled fragments for ``event`` in the terminal UI (``None``: nothing to show)."""
    kind = event.type
    if kind in _SILENT:
        return None
    when = date_clock(event.ts()) if _is_history(event) else clock(event.ts())
    ts: list[tuple[str, str]] = [("class:ts", when + " ")]
    sender = clean(event.text("from"))
    body = clean(event.text("text"))
    own = bool(me) and name_key(sender) == name_key(me)
    who = f"fg:{name_colour(sender)} bold" + (" underline" if own else "")
    others = "" if own else me  # your own name in your own line is not a mention
    if kind == "msg":
        return FormattedText(
            [*ts, (who, f"<{sender}>"), ("", " "), *_highlighted(body, others, "")]
        )
    if kind == "action":
        return FormattedText(
            [
                *ts,
                ("class:action", "* "),
                (who, sender),
                ("class:action", " "),
                *_highlighted(body, others, "class:action"),
            ]
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
    if kind in ("error", "gap"):
        return FormattedText([*ts, ("class:error", f"! {_notice_text(event)}")])
    text = _notice_text(event)
    if text is None:
        return None
    lines = text.splitlines() or [""]
    return FormattedText([*ts, ("class:notice", "-- " + "\n   ".join(lines))])


def _mention_pattern(me: str) -> re.Pattern[str]:
    # The name as a word of its own: "alice" in "alice: hi" and "hi @alice", not in "malice".
    return re.compile(rf"(?<![\w.-]){re.escape(me)}(?![\w-])", re.IGNORECASE)


def mentions(text: str, me: str) -> bool:
    """True if ``text`` names ``me`` (case-insensitively, as a word of its own)."""
    return bool(me) and _mention_pattern(me).search(text) is not None


def _highlighted(body: str, me: str, style: str) -> list[tuple[str, str]]:
    """``body`` as fragments of ``style``, with each mention of ``me`` standing out."""
    if not me:
        return [(style, body)]
    fragments: list[tuple[str, str]] = []
    at = 0
    for match in _mention_pattern(me).finditer(body):
        fragments += [(style, body[at : match.start()]), (f"{style} class:mention", match[0])]
        at = match.end()
    fragments.append((style, body[at:]))
    return [f for f in fragments if f[1]]


def render_status(text: str, *, error: bool = False) -> FormattedText:
    """A line about the connection itself (connecting, lost, reconnecting), styled apart."""
    return FormattedText(
        [
            ("class:ts", clock(None) + " "),
            ("class:error" if error else "class:status", f"** {text}"),
        ]
    )
