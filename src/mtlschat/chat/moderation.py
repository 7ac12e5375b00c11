"""A room's moderation state: bans, mutes and the topic (sans-I/O).

Bans and the topic outlive restarts through a :class:`ModerationStore` (SQLite in
:mod:`mtlschat.moderation_store`); mutes are for the moment and live in memory only. Names are
compared by :func:`~mtlschat.ca.names.name_key` (case-insensitively), like everywhere else.
Expired bans and mutes are dropped lazily, when next looked at.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Protocol

from mtlschat.ca.names import name_key

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float | None:
    """Seconds in ``30s``, ``10m``, ``2h``, ``7d``, ``1w``; None if ``text`` is not one."""
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    return float(match.group(1)) * _UNIT[match.group(2).lower()]


def format_duration(seconds: float) -> str:
    """The largest whole unit: ``2h``, ``90m``, ``45s``."""
    for unit in "wdhm":
        size = _UNIT[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class Ban:
    """``name`` may not join until ``until`` (a wall-clock time; None: until lifted)."""

    name: str
    until: float | None
    reason: str
    by: str
    at: float


def describe_ban(ban: Ban) -> str:
    """What a banned member is told: by whom, until when, why."""
    until = "until lifted" if ban.until is None else f"until {_utc(ban.until)}"
    why = f": {ban.reason}" if ban.reason else ""
    return f"{ban.name} is banned from this room by {ban.by}, {until}{why}"


def _utc(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(moment))


@dataclass(frozen=True, slots=True)
class Topic:
    """The room's topic, who set it and when."""

    text: str
    by: str
    at: float


class ModerationStore(Protocol):
    """Where bans and the topic are kept across restarts, per room."""

    def load(self, room: str) -> tuple[list[Ban], Topic | None]:
        """Every ban and the topic of ``room``."""
        ...

    def save_ban(self, room: str, ban: Ban) -> None:
        """Add or replace the ban of ``ban.name``."""
        ...

    def delete_ban(self, room: str, name: str) -> None:
        """Lift the ban of ``name``."""
        ...

    def save_topic(self, room: str, topic: Topic | None) -> None:
        """Set (or clear) the topic."""
        ...


class Moderation:
    """Bans, mutes and topic of one room, written through to ``store`` if given."""

    def __init__(self, store: ModerationStore | None = None, room: str = "main") -> None:
        self.store = store
        self.room = room
        self._bans: dict[str, Ban] = {}
        self.topic: Topic | None = None
        if store is not None:
            bans, self.topic = store.load(room)
            self._bans = {name_key(b.name): b for b in bans}
        self.mutes: dict[str, float | None] = {}  # name_key -> until (None: until lifted)

    # -- bans --------------------------------------------------------------------------------

    def banned(self, name: str, now: float) -> Ban | None:
        """The ban in force on ``name``, if any."""
        key = name_key(name)
        ban = self._bans.get(key)
        if ban is not None and ban.until is not None and now >= ban.until:
            self.unban(name)
            return None
        return ban

    def ban(self, ban: Ban) -> None:
        """Ban ``ban.name`` (replacing any earlier ban of that name)."""
        self._bans[name_key(ban.name)] = ban
        if self.store is not None:
            self.store.save_ban(self.room, ban)

    def unban(self, name: str) -> bool:
        """Lift the ban on ``name``; False if there was none."""
        ban = self._bans.pop(name_key(name), None)
        if ban is not None and self.store is not None:
            self.store.delete_ban(self.room, ban.name)
        return ban is not None

    def bans(self, now: float) -> list[Ban]:
        """The bans in force, by name."""
        return sorted(
            (b for b in list(self._bans.values()) if self.banned(b.name, now) is not None),
            key=lambda b: name_key(b.name),
        )

    # -- mutes -------------------------------------------------------------------------------

    def muted(self, name: str, now: float) -> bool:
        """Whether ``name`` may not speak in the room now."""
        key = name_key(name)
        if key not in self.mutes:
            return False
        until = self.mutes[key]
        if until is not None and now >= until:
            del self.mutes[key]
            return False
        return True

    # -- topic -------------------------------------------------------------------------------

    def set_topic(self, topic: Topic | None) -> None:
        """Set (or clear, with None) the topic."""
        self.topic = topic
        if self.store is not None:
            self.store.save_topic(self.room, topic)
