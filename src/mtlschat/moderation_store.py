"""Bans and the topic in a small SQLite file (default ``PKI/moderation.db``), keyed by room.

Each change is one committed statement before the room announces it, so a ban announced is a
ban kept, even after ``kill -9``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mtlschat.ca.names import name_key
from mtlschat.chat.moderation import Ban, Topic

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bans(
    room TEXT NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL, until REAL,
    reason TEXT NOT NULL, by TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY(room, key)
);
CREATE TABLE IF NOT EXISTS topics(
    room TEXT PRIMARY KEY, text TEXT NOT NULL, by TEXT NOT NULL, at REAL NOT NULL
);
"""


class ModerationError(Exception):
    """The moderation file cannot be used (one-line message)."""


class SQLiteModerationStore:
    """:class:`~mtlschat.chat.moderation.ModerationStore` over one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # Autocommit: one write per change. Opened by the thread that builds the server,
            # used by the one that runs it (tests run the loop on a thread).
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ModerationError(f"cannot use the moderation file {path}: {exc}") from None

    def load(self, room: str) -> tuple[list[Ban], Topic | None]:
        """Every ban and the topic of ``room``."""
        bans = [
            Ban(name, until, reason, by, at)
            for name, until, reason, by, at in self._db.execute(
                "SELECT name, until, reason, by, at FROM bans WHERE room = ?", (room,)
            )
        ]
        row = self._db.execute("SELECT text, by, at FROM topics WHERE room = ?", (room,)).fetchone()
        return bans, Topic(*row) if row else None

    def save_ban(self, room: str, ban: Ban) -> None:
        """Add or replace the ban of ``ban.name``."""
        self._db.execute(
            "INSERT OR REPLACE INTO bans VALUES (?, ?, ?, ?, ?, ?, ?)",
            (room, name_key(ban.name), ban.name, ban.until, ban.reason, ban.by, ban.at),
        )

    def delete_ban(self, room: str, name: str) -> None:
        """Lift the ban of ``name``."""
        self._db.execute("DELETE FROM bans WHERE room = ? AND key = ?", (room, name_key(name)))

    def save_topic(self, room: str, topic: Topic | None) -> None:
        """Set (or clear) the topic."""
        if topic is None:
            self._db.execute("DELETE FROM topics WHERE room = ?", (room,))
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO topics VALUES (?, ?, ?, ?)",
                (room, topic.text, topic.by, topic.at),
            )

    def close(self) -> None:
        """Close the file."""
        self._db.close()
