"""The command table: ``/name`` -> Command. One entry per command; add new ones here.

Handlers get ``(room, session, arg, now)`` where ``arg`` is the stripped text after the command
word, and talk back only through the room's handler API (``send``, ``error``, ``broadcast``...).
Operator commands (kick, ban), motd and history slot in as more entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mtlschat.chat.wire import (
    BAD_USAGE,
    UNKNOWN_USER,
    Action,
    Dm,
    Info,
    Mode,
    Who,
    clean_text,
    shorten,
)

if TYPE_CHECKING:
    from mtlschat.chat.room import Room, Session

Handler = Callable[["Room", "Session", str, float], None]


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


def _who(room: Room, s: Session, arg: str, now: float) -> None:
    room.send(s, Who(room.online()))


def _msg(room: Room, s: Session, arg: str, now: float) -> None:
    parts = arg.split(None, 1)
    if len(parts) < 2:
        _usage(room, s, "msg")
        return
    target, text = parts
    targets = room.sessions_of(target)
    if not targets:
        room.error(s, UNKNOWN_USER, f"no such user online: {shorten(target)}")
        return
    ev = Dm(room.next_id(), now, s.name, targets[0].name, clean_text(text))
    room.counters.messages += 1
    # To every session of the target, echoed to every session of the sender; once each.
    seen: set[int] = set()
    for peer in (*targets, *room.sessions_of(s.name)):
        if peer.id not in seen:
            seen.add(peer.id)
            room.send(peer, ev)


def _me(room: Room, s: Session, arg: str, now: float) -> None:
    if not arg:
        _usage(room, s, "me")
        return
    room.counters.messages += 1
    room.broadcast(Action(room.next_id(), now, s.name, clean_text(arg)), s)


def _help(room: Room, s: Session, arg: str, now: float) -> None:
    room.send(s, Info("commands:"))
    for command in COMMANDS.values():
        if not command.hidden:
            room.send(s, Info(f"  {command.usage} - {command.help}"))
    room.send(s, Info("  //text sends a line starting with /"))


def _quit(room: Room, s: Session, arg: str, now: float) -> None:
    room.end(s, "quit", leave=f"quit: {arg}" if arg else "quit")


def _pong(room: Room, s: Session, arg: str, now: float) -> None:
    pass  # any line already counted as activity


def _mode(room: Room, s: Session, arg: str, now: float) -> None:
    mode = Mode.parse(arg)
    if mode is None:
        _usage(room, s, "mode")
        return
    room.set_mode(s, mode)
    room.send(s, Info(f"mode: {mode.name.lower()}"))


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
}
