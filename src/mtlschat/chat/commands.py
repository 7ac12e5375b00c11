"""The command table: ``/name`` -> Command. One entry per command; add new ones here.

Handlers get ``(room, session, arg, ts)``: ``arg`` is the stripped text after the command word,
``ts`` the wall-clock time to stamp their events with. They talk back only through the room's
handler API (``send``, ``error``, ``broadcast``...).
Operator commands (kick, ban), motd and history slot in as more entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mtlschat.ca.names import is_valid_username, name_key
from mtlschat.chat.moderation import (
    Ban,
    Topic,
    describe_ban,
    format_duration,
    parse_duration,
)
from mtlschat.chat.wire import (
    BAD_USAGE,
    NO_HISTORY,
    NOT_OPERATOR,
    UNKNOWN_USER,
    Action,
    Dm,
    GapNotice,
    Info,
    Mode,
    Resumed,
    Who,
    clean_text,
    shorten,
)
from mtlschat.history.journal import Gap
from mtlschat.history.store import ACTION, DM, Record, search_terms

if TYPE_CHECKING:
    from mtlschat.chat.room import Room, Session

Handler = Callable[["Room", "Session", str, float], None]

SEARCH_LIMIT = 50  # lines one /search shows (the most recent matches)


@dataclass(frozen=True, slots=True)
class Command:
    """One chat command."""

    handler: Handler
    usage: str  # e.g. "/msg NAME text"
    help: str  # one line for /help
    rated: bool = True  # counts against the sender's rate limit
    hidden: bool = False  # protocol plumbing, left out of /help (docs/protocol.md has it)
    operator: bool = False  # only the configured operators may use it ("not an operator")


def _usage(room: Room, s: Session, command: str) -> None:
    room.error(s, BAD_USAGE, f"usage: {COMMANDS[command].usage}")


def _who(room: Room, s: Session, arg: str, ts: float) -> None:
    room.send(s, Who(room.online()))


def _msg(room: Room, s: Session, arg: str, ts: float) -> None:
    parts = arg.split(None, 1)
    if len(parts) < 2:
        _usage(room, s, "msg")
        return
    target, text = parts
    targets = room.sessions_of(target)
    if not targets:
        room.error(s, UNKNOWN_USER, f"no such user online: {shorten(target)}")
        return
    ev = Dm(room.next_id(), ts, s.name, targets[0].name, clean_text(text))
    room.remember(Record(ev.id, ts, DM, s.name, ev.body, ev.to, s.origin))
    room.counters.messages += 1
    # To every session of the target, echoed to every session of the sender; once each.
    seen: set[int] = set()
    for peer in (*targets, *room.sessions_of(s.name)):
        if peer.id not in seen:
            seen.add(peer.id)
            room.send(peer, ev)


def _me(room: Room, s: Session, arg: str, ts: float) -> None:
    if not arg:
        _usage(room, s, "me")
        return
    if room.moderation.mutes and room.muted(s, room.clock(), ts):
        return
    room.counters.messages += 1
    ev = Action(room.next_id(), ts, s.name, clean_text(arg))
    room.remember(Record(ev.id, ts, ACTION, s.name, ev.body, "", s.origin))
    room.broadcast(ev, s)


def _help(room: Room, s: Session, arg: str, ts: float) -> None:
    room.send(s, Info("commands:"))
    for command in COMMANDS.values():
        if not command.hidden:
            room.send(s, Info(f"  {command.usage} - {command.help}"))
    room.send(s, Info("  //text sends a line starting with /"))


def _quit(room: Room, s: Session, arg: str, ts: float) -> None:
    room.end(s, "quit", leave=f"quit: {arg}" if arg else "quit")


def _pong(room: Room, s: Session, arg: str, ts: float) -> None:
    pass  # any line already counted as activity


def _mode(room: Room, s: Session, arg: str, ts: float) -> None:
    mode = Mode.parse(arg)
    if mode is None:
        _usage(room, s, "mode")
        return
    room.set_mode(s, mode)
    room.send(s, Info(f"mode: {mode.name.lower()}"))


def _no_history(room: Room, s: Session) -> bool:
    if room.history is None:
        room.error(s, NO_HISTORY, "this server keeps no history")
        return True
    return False


def _history(room: Room, s: Session, arg: str, ts: float) -> None:
    if _no_history(room, s):
        return
    assert room.history is not None
    cap = room.settings.history_max
    if not arg:
        count = room.settings.history_join or 20
    elif arg.isdigit() and int(arg) > 0:
        count = min(int(arg), cap)
    else:
        _usage(room, s, "history")
        return
    room.replay(s, room.history.last(count, s.name), "request")


def _search(room: Room, s: Session, arg: str, ts: float) -> None:
    if _no_history(room, s):
        return
    assert room.history is not None
    if not search_terms(arg):
        _usage(room, s, "search")
        return
    found = room.history.search(arg, SEARCH_LIMIT, s.name)
    room.replay(s, found, "search", shorten(arg))


def _resume(room: Room, s: Session, arg: str, ts: float) -> None:
    if _no_history(room, s):
        return
    history = room.history
    assert history is not None
    parts = arg.split()
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        _usage(room, s, "resume")
        return
    epoch, after = parts[0], int(parts[1])
    try:
        origins = {int(o) for o in parts[2].split(",")[:64]} if len(parts) == 3 else set()
    except ValueError:
        _usage(room, s, "resume")
        return
    if epoch != history.epoch:
        room.send(s, Resumed(history.epoch, history.last_offset, 0, True))
        return
    items, last = history.recover(after, s.name, room.settings.history_max, origins)
    lines = [r for r in items if not isinstance(r, Gap)]
    for item in items:
        if isinstance(item, Gap):
            room.send(s, GapNotice(item))
        else:
            room.replay(s, [item], "resume")
    room.send(s, Resumed(history.epoch, last, len(lines), False))


# ---- moderation: also called by `mtlschat admin` (actor "admin") ---------------------------


class ModerationRefused(Exception):
    """An operator action that cannot be done (one line: unknown user, not banned...)."""


def kick(room: Room, actor: str, name: str, reason: str = "") -> None:
    """End every session of ``name`` (``bye: kicked by ACTOR: REASON``); announce, audit."""
    sessions = room.sessions_of(name)
    if not sessions:
        raise ModerationRefused(f"no such user online: {shorten(name)}")
    bye = f"kicked by {actor}" + (f": {reason}" if reason else "")
    room.audit(actor, "kicked", sessions[0].name, reason)
    for target in sessions:
        room.end(target, clean_text(bye))


def ban(room: Room, actor: str, name: str, seconds: float | None, reason: str = "") -> None:
    """Refuse ``name`` at join (for ``seconds``, or until lifted); end its sessions; audit."""
    if not is_valid_username(name):
        raise ModerationRefused(f"not a valid name: {shorten(name)}")
    now = room.wall()
    until = None if seconds is None else now + seconds
    room.moderation.ban(Ban(name, until, clean_text(reason), actor, now))
    span = "until lifted" if seconds is None else f"for {format_duration(seconds)}"
    room.audit(actor, "banned", name, f"{span}; {reason}" if reason else span)
    bye = f"banned by {actor}" + (f": {reason}" if reason else "")
    for target in room.sessions_of(name):
        room.end(target, clean_text(bye))


def unban(room: Room, actor: str, name: str) -> None:
    """Lift the ban on ``name``; audit."""
    if not room.moderation.unban(name):
        raise ModerationRefused(f"{shorten(name)} is not banned")
    room.audit(actor, "unbanned", name)


def ban_list(room: Room) -> list[str]:
    """One line per ban in force."""
    return [describe_ban(b) for b in room.moderation.bans(room.wall())]


def _moderate(room: Room, s: Session, action: Callable[[], None]) -> None:
    try:
        action()
    except ModerationRefused as exc:
        room.error(s, BAD_USAGE, str(exc))


def _kick(room: Room, s: Session, arg: str, now: float) -> None:
    name, _, reason = arg.partition(" ")
    if not name:
        _usage(room, s, "kick")
        return
    _moderate(room, s, lambda: kick(room, s.name, name, reason.strip()))


def _ban(room: Room, s: Session, arg: str, now: float) -> None:
    name, _, rest = arg.partition(" ")
    if not name:
        _usage(room, s, "ban")
        return
    first, _, more = rest.strip().partition(" ")
    seconds = parse_duration(first)
    reason = more.strip() if seconds is not None else rest.strip()
    _moderate(room, s, lambda: ban(room, s.name, name, seconds, reason))


def _unban(room: Room, s: Session, arg: str, now: float) -> None:
    if not arg or " " in arg:
        _usage(room, s, "unban")
        return
    _moderate(room, s, lambda: unban(room, s.name, arg))


def _bans(room: Room, s: Session, arg: str, now: float) -> None:
    lines = ban_list(room)
    for line in lines or ["no bans"]:
        room.send(s, Info(line))


def _mute(room: Room, s: Session, arg: str, now: float) -> None:
    parts = arg.split()
    seconds = parse_duration(parts[1]) if len(parts) == 2 else None
    if not parts or len(parts) > 2 or (len(parts) == 2 and seconds is None):
        _usage(room, s, "mute")
        return
    name = parts[0]
    room.moderation.mutes[name_key(name)] = None if seconds is None else now + seconds
    span = "until unmuted" if seconds is None else f"for {format_duration(seconds)}"
    room.audit(s.name, "muted", name, span)


def _unmute(room: Room, s: Session, arg: str, now: float) -> None:
    if not arg or " " in arg:
        _usage(room, s, "unmute")
        return
    if room.moderation.mutes.pop(name_key(arg), "no") == "no":
        room.error(s, BAD_USAGE, f"{shorten(arg)} is not muted")
        return
    room.audit(s.name, "unmuted", arg)


def _topic(room: Room, s: Session, arg: str, now: float) -> None:
    if not arg:
        topic = room.moderation.topic
        room.send(s, Info(f"topic: {topic.text} (set by {topic.by})" if topic else "no topic"))
        return
    if not room.is_operator(s.name):
        room.error(s, NOT_OPERATOR, "/topic: not an operator (anyone may read it: /topic)")
        return
    text = clean_text(arg)
    room.moderation.set_topic(None if text == "-" else Topic(text, s.name, now))
    if text == "-":
        room.audit(s.name, "cleared the topic", "")
    else:
        room.audit(s.name, "set the topic", "", text)


COMMANDS: dict[str, Command] = {
    "who": Command(_who, "/who", "list who is online"),
    "msg": Command(_msg, "/msg NAME text", "private message to NAME (all of NAME's sessions)"),
    "me": Command(_me, "/me action", "an action: * you action"),
    "help": Command(_help, "/help", "list the commands"),
    "quit": Command(_quit, "/quit [reason]", "leave the room", rated=False),
    "pong": Command(
        _pong, "/pong", "answer a keepalive ping (any line does)", rated=False, hidden=True
    ),
    "mode": Command(_mode, "/mode text|json", "switch what the server sends you", hidden=True),
    "history": Command(_history, "/history [N]", "the last N lines (default 20, at most 1000)"),
    "search": Command(_search, "/search WORDS", "the last lines containing all WORDS"),
    "resume": Command(
        _resume,
        "/resume EPOCH OFFSET [ORIGINS]",
        "replay what you missed since OFFSET (clients send it when they reconnect)",
        hidden=True,
    ),
    "topic": Command(_topic, "/topic [TEXT | -]", "show the topic; operators set (or clear) it"),
    "kick": Command(_kick, "/kick NAME [reason]", "disconnect NAME (operators)", operator=True),
    "ban": Command(
        _ban,
        "/ban NAME [DURATION] [reason]",
        "keep NAME out (30m, 2h, 7d; default until /unban) (operators)",
        operator=True,
    ),
    "unban": Command(_unban, "/unban NAME", "lift NAME's ban (operators)", operator=True),
    "bans": Command(_bans, "/bans", "list the bans in force (operators)", operator=True),
    "mute": Command(
        _mute, "/mute NAME [DURATION]", "NAME's lines are dropped (operators)", operator=True
    ),
    "unmute": Command(_unmute, "/unmute NAME", "let NAME speak again (operators)", operator=True),
}
