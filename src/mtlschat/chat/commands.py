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

from mtlschat.chat.wire import (
    BAD_USAGE,
    NO_HISTORY,
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
}
