"""The command table: ``/name`` -> Command. One entry per command; add new ones here.

Handlers get ``(room, session, arg, ts)``: ``arg`` is the stripped text after the command word,
``ts`` the wall-clock time to stamp their events with. They talk back only through the room's
handler API (``send``, ``error``, ``broadcast``...).
Operator commands (kick, ban), motd and history slot in as more entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    GapNotice,
    Info,
    Mode,
    Resumed,
    Who,
    clean_text,
    shorten,
)
from mtlschat.history.journal import Gap
from mtlschat.history.store import ACTION, DM, search_terms

if TYPE_CHECKING:
    from mtlschat.chat.room import Room, Session

Handler = Callable[["Room", "Session", str, float], None]
# An operator action done by an actor who need not be in the room (`mtlschat admin`: the actor is
# "admin(shell)"): (room, actor, arg) -> lines for the actor alone (None: the room's announcement
# says it all). Raises ModerationRefused with a one-line reason.
OperatorAction = Callable[["Room", str, str], "list[str] | None"]

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
    action: OperatorAction | None = None  # the same command for an actor outside the room (admin)


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
    to = room.find_online(target)
    if to is None:
        room.error(s, UNKNOWN_USER, f"no such user online: {shorten(target)}")
        return
    room.say(s, DM, clean_text(text), ts, to)


def _me(room: Room, s: Session, arg: str, ts: float) -> None:
    if not arg:
        _usage(room, s, "me")
        return
    if room.moderation.mutes and room.muted(s, room.clock(), ts):
        return
    room.say(s, ACTION, clean_text(arg), ts)


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


# ---- moderation: also called by `mtlschat admin` (actor "admin(shell)") ---------------------


class ModerationRefused(Exception):
    """An operator action that cannot be done (one line: unknown user, not banned...)."""


def _deliverable(room: Room) -> None:
    # Relay mode: an action the other nodes would never hear of is refused, not half done.
    if room.degraded is not None:
        raise ModerationRefused(f"not done: the room cannot deliver it now ({room.degraded})")


def kick(room: Room, actor: str, name: str, reason: str = "") -> None:
    """End every session of ``name`` (``bye: kicked by ACTOR: REASON``); announce, audit."""
    target = room.find_online(name)
    if target is None:
        raise ModerationRefused(f"no such user online: {shorten(name)}")
    _deliverable(room)
    room.audit(actor, "kicked", target, reason)
    room.moderate({"op": "kick", "name": target, "by": actor, "reason": reason})


def ban(room: Room, actor: str, name: str, seconds: float | None, reason: str = "") -> None:
    """Refuse ``name`` at join (for ``seconds``, or until lifted); end its sessions; audit."""
    if not is_valid_username(name):
        raise ModerationRefused(f"not a valid name: {shorten(name)}")
    _deliverable(room)
    now = room.wall()
    until = None if seconds is None else now + seconds
    span = "until lifted" if seconds is None else f"for {format_duration(seconds)}"
    room.audit(actor, "banned", name, f"{span}; {reason}" if reason else span)
    op = {"op": "ban", "name": name, "until": until, "reason": reason, "by": actor, "at": now}
    room.moderate(op)


def unban(room: Room, actor: str, name: str) -> None:
    """Lift the ban on ``name``; audit."""
    if room.moderation.banned(name, room.wall()) is None:
        raise ModerationRefused(f"{shorten(name)} is not banned")
    _deliverable(room)
    room.moderate({"op": "unban", "name": name})
    room.audit(actor, "unbanned", name)


def mute(room: Room, actor: str, name: str, seconds: float | None) -> None:
    """Drop ``name``'s room lines (for ``seconds``, or until unmuted); audit."""
    _deliverable(room)
    until = None if seconds is None else room.wall() + seconds
    room.moderate({"op": "mute", "name": name, "until": until})
    span = "until unmuted" if seconds is None else f"for {format_duration(seconds)}"
    room.audit(actor, "muted", name, span)


def unmute(room: Room, actor: str, name: str) -> None:
    """Let ``name`` speak again; audit."""
    if name_key(name) not in room.moderation.mutes:
        raise ModerationRefused(f"{shorten(name)} is not muted")
    _deliverable(room)
    room.moderate({"op": "unmute", "name": name})
    room.audit(actor, "unmuted", name)


def set_topic(room: Room, actor: str, text: str) -> None:
    """Set the topic to ``text`` (clean), or clear it with ``-``; audit."""
    _deliverable(room)
    cleared = text == "-"
    room.moderate(
        {"op": "topic", "text": None if cleared else text, "by": actor, "at": room.wall()}
    )
    if cleared:
        room.audit(actor, "cleared the topic", "")
    else:
        room.audit(actor, "set the topic", "", text)


def apply_moderation(room: Room, op: Mapping[str, object]) -> None:
    """Apply one moderation change to this room (alone: at once; relay mode: on every node, as
    the ``mod`` record is delivered). ``op["op"]``: kick, ban, unban, mute, unmute, topic;
    others (the engine's, e.g. crl) are left to whoever handles them. Raises KeyError,
    TypeError or ValueError on a malformed change.
    """
    kind = op["op"]
    name = str(op.get("name", ""))
    if kind in ("kick", "ban"):
        by, reason = str(op["by"]), str(op.get("reason", ""))
        if kind == "ban":
            until, at = op.get("until"), op["at"]
            if not isinstance(at, (int, float)) or not isinstance(until, (int, float, type(None))):
                raise TypeError("ban: until/at are not times")
            room.moderation.ban(Ban(name, until, clean_text(reason), by, at))
        bye = ("kicked by " if kind == "kick" else "banned by ") + by
        bye += f": {reason}" if reason else ""
        for target in room.sessions_of(name):
            room.end(target, clean_text(bye))
    elif kind == "unban":
        room.moderation.unban(name)
    elif kind == "mute":
        until = op.get("until")
        if not isinstance(until, (int, float, type(None))):
            raise TypeError("mute: until is not a time")
        room.moderation.mutes[name_key(name)] = until
    elif kind == "unmute":
        room.moderation.mutes.pop(name_key(name), None)
    elif kind == "topic":
        text, at = op.get("text"), op["at"]
        if not isinstance(at, (int, float)):
            raise TypeError("topic: at is not a time")
        topic = None if text is None else Topic(clean_text(str(text)), str(op["by"]), at)
        room.moderation.set_topic(topic)


def ban_list(room: Room) -> list[str]:
    """One line per ban in force."""
    return [describe_ban(b) for b in room.moderation.bans(room.wall())]


def _usage_text(command: str) -> str:
    return f"usage: {COMMANDS[command].usage}"


def kick_action(room: Room, actor: str, arg: str) -> None:
    """``NAME [reason]``: :func:`kick`."""
    name, _, reason = arg.partition(" ")
    if not name:
        raise ModerationRefused(_usage_text("kick"))
    kick(room, actor, name, reason.strip())


def ban_action(room: Room, actor: str, arg: str) -> None:
    """``NAME [DURATION] [reason]``: :func:`ban`."""
    name, _, rest = arg.partition(" ")
    if not name:
        raise ModerationRefused(_usage_text("ban"))
    first, _, more = rest.strip().partition(" ")
    seconds = parse_duration(first)
    reason = more.strip() if seconds is not None else rest.strip()
    ban(room, actor, name, seconds, reason)


def unban_action(room: Room, actor: str, arg: str) -> None:
    """``NAME``: :func:`unban`."""
    if not arg or " " in arg:
        raise ModerationRefused(_usage_text("unban"))
    unban(room, actor, arg)


def bans_action(room: Room, actor: str, arg: str) -> list[str]:
    """The bans in force, one line each (``no bans``)."""
    return ban_list(room) or ["no bans"]


def _moderate(room: Room, s: Session, action: Callable[[], None]) -> None:
    """Run ``action`` for member ``s``; a refusal is their error."""
    try:
        action()
    except ModerationRefused as exc:
        room.error(s, BAD_USAGE, str(exc))


def _by_member(action: OperatorAction) -> Handler:
    """The chat handler of ``action``: the member is the actor, refusals are their error."""

    def handler(room: Room, s: Session, arg: str, ts: float) -> None:
        lines: list[str] = []
        _moderate(room, s, lambda: lines.extend(action(room, s.name, arg) or ()))
        for line in lines:
            room.send(s, Info(line))

    return handler


def _operator(action: OperatorAction, usage: str, help: str) -> Command:
    """An operator command, run the same way from the room and from `mtlschat admin`."""
    return Command(_by_member(action), usage, help, operator=True, action=action)


def _mute(room: Room, s: Session, arg: str, now: float) -> None:
    parts = arg.split()
    seconds = parse_duration(parts[1]) if len(parts) == 2 else None
    if not parts or len(parts) > 2 or (len(parts) == 2 and seconds is None):
        _usage(room, s, "mute")
        return
    _moderate(room, s, lambda: mute(room, s.name, parts[0], seconds))


def _unmute(room: Room, s: Session, arg: str, now: float) -> None:
    if not arg or " " in arg:
        _usage(room, s, "unmute")
        return
    _moderate(room, s, lambda: unmute(room, s.name, arg))


def _topic(room: Room, s: Session, arg: str, now: float) -> None:
    if not arg:
        topic = room.moderation.topic
        room.send(s, Info(f"topic: {topic.text} (set by {topic.by})" if topic else "no topic"))
        return
    if not room.is_operator(s.name):
        room.error(s, NOT_OPERATOR, "/topic: not an operator (anyone may read it: /topic)")
        return
    _moderate(room, s, lambda: set_topic(room, s.name, clean_text(arg)))


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
    "kick": _operator(kick_action, "/kick NAME [reason]", "disconnect NAME (operators)"),
    "ban": _operator(
        ban_action,
        "/ban NAME [DURATION] [reason]",
        "keep NAME out (30m, 2h, 7d; default until /unban) (operators)",
    ),
    "unban": _operator(unban_action, "/unban NAME", "lift NAME's ban (operators)"),
    "bans": _operator(bans_action, "/bans", "list the bans in force (operators)"),
    "mute": Command(
        _mute, "/mute NAME [DURATION]", "NAME's lines are dropped (operators)", operator=True
    ),
    "unmute": Command(_unmute, "/unmute NAME", "let NAME speak again (operators)", operator=True),
}
