"""The history store interface: what the room needs from any store (SQLite today, Redis next).

Semantics (shared by every implementation, the way Centrifugo's streams work):

- Everything is keyed by **room name**; there is one room today, more later without a migration.
- Every stored line has an **offset**, strictly increasing per room and dense: the room hands out
  ``last_offset(room) + 1, + 2, ...`` and appends each round's lines in one call. Offsets continue
  across restarts with no gap and no duplicate; retention removes the oldest lines, never
  renumbers.
- The store has an **epoch**: a random id created with the store. A client that saw epoch E
  can resume from its last offset as long as the epoch is still E; a new epoch means the history
  it knew is gone ("history was reset").
- A private message (``kind == "dm"``) is stored with its sender and recipient and is only ever
  returned, with its text, to one of them: every query takes the ``viewer``; to anyone else it
  comes back :meth:`Record.redacted` (offset and time only), so a reader can still tell "nothing
  missing" from "lines lost".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from mtlschat.ca.names import name_key

ROOM = "main"  # the one room's name, until there are rooms

MSG = "msg"
ACTION = "action"
DM = "dm"
HIDDEN = "hidden"  # a DM seen by a third party, or not kept (DM storage off): offset and time only
KINDS = (MSG, ACTION, DM, HIDDEN)
CHAT_KINDS = (MSG, ACTION, DM)  # the lines that take an offset (what history queries return)
# Records a relayed room publishes besides chat lines (issue 13): offset 0, never in history.
JOIN = "join"  # sender's first session on ``node`` opened; text unused
LEAVE = "leave"  # sender's last session on ``node`` ended; text = the reason
INFO = "info"  # an announcement to the room (an operator action); text = the line
MOD = "mod"  # a moderation change every node applies; text = JSON {"op": ..., ...}
RELAY_KINDS = (JOIN, LEAVE, INFO, MOD)


class Record(NamedTuple):
    """One stored line. A tuple, so a round of them goes to the database without copying."""

    offset: int
    ts: float  # Unix seconds, server clock
    kind: str  # MSG, ACTION, DM or HIDDEN (stored); JOIN, LEAVE, INFO, MOD (relayed only)
    sender: str
    text: str
    to: str = ""  # the recipient of a DM; "" for room lines
    origin: int = 0  # the session that sent it: its own client is not replayed its own lines
    node: str = ""  # the node it was said on (a relayed room); "" in a single-process room

    def visible_to(self, viewer_key: str) -> bool:
        """Whether ``viewer_key`` (a :func:`name_key`) may read this line's text."""
        if self.kind == DM:
            return name_key(self.sender) == viewer_key or name_key(self.to) == viewer_key
        return self.kind != HIDDEN

    def redacted(self) -> Record:
        """This line as a third party may know it: that some line had this offset and time."""
        return Record(self.offset, self.ts, HIDDEN, "", "")

    def for_viewer(self, viewer_key: str) -> Record:
        """Itself if ``viewer_key`` may read it, else :meth:`redacted`."""
        return self if self.visible_to(viewer_key) else self.redacted()


class HistoryError(Exception):
    """The store cannot be used; the message is one line naming the file (or server) and why."""


class StoreBusy(HistoryError):
    """Another server already writes this store (one writer per store)."""


class StoreIOError(HistoryError):
    """A write failed while running (disk full, I/O error): the caller may retry later."""


class HistoryStore(Protocol):
    """What the room needs from a history store. Calls are short and bounded."""

    @property
    def epoch(self) -> str:
        """The store's epoch: a random id created with the store."""
        ...

    @property
    def location(self) -> str:
        """Where the store lives, for messages (a path, a URL without password)."""
        ...

    def last_offset(self, room: str) -> int:
        """The last offset handed out in ``room`` (0 for a room that never had a line)."""
        ...

    def append(self, room: str, records: Sequence[Record]) -> None:
        """Store a round's lines in one transaction: all of them or none (raise StoreIOError).

        Offsets must continue the room's sequence: ``records[0].offset > last_offset(room)``.
        """
        ...

    def since(self, room: str, after: int, limit: int, viewer: str) -> list[Record]:
        """Up to ``limit`` lines with offset > ``after``, oldest first, DMs redacted for others."""
        ...

    def last(self, room: str, count: int, viewer: str) -> list[Record]:
        """The last ``count`` lines ``viewer`` may read, oldest first (hidden lines skipped)."""
        ...

    def search(self, room: str, words: str, limit: int, viewer: str) -> list[Record]:
        """The last ``limit`` lines ``viewer`` may read that contain all ``words``, oldest first."""
        ...

    def trim(self, now: float, budget: int) -> int:
        """Drop at most ``budget`` lines past retention (age, count); return how many went."""
        ...

    def close(self) -> None:
        """Release the store (and its one-writer lock)."""
        ...


def search_terms(words: str) -> list[str]:
    """The words of a ``/search`` query: runs of letters and digits (as the index splits text),
    at most 16; anything else (quotes, stars, operators' punctuation) only separates them."""
    return _WORD.findall(words)[:16]


_WORD = re.compile(r"[^\W_]+")


def check_sequence(room: str, last: int, records: Sequence[Record]) -> None:
    """Raise ValueError unless ``records`` continue ``room``'s offsets strictly after ``last``."""
    prev = last
    for r in records:
        if r.offset <= prev:
            raise ValueError(f"offset {r.offset} in room {room!r} does not follow {prev}")
        prev = r.offset


__all__ = [
    "ACTION",
    "CHAT_KINDS",
    "DM",
    "HIDDEN",
    "INFO",
    "JOIN",
    "KINDS",
    "LEAVE",
    "MOD",
    "MSG",
    "RELAY_KINDS",
    "ROOM",
    "HistoryError",
    "HistoryStore",
    "Record",
    "StoreBusy",
    "StoreIOError",
    "check_sequence",
    "search_terms",
]
