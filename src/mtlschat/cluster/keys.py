"""The Redis keys of one room, all under ``mtlschat:{ROOM}:`` (the braces are a Redis Cluster
hash tag: every key of a room lands in one slot, so one script may touch them all).

- ``epoch``: random hex, created with SET NX when missing; missing means Redis lost its data.
- ``offset``: the last chat-line offset handed out (INCR; only chat lines take one).
- ``log``: the stream of every published record, in the one global order: one entry per
  published batch (see stream.py), trimmed by chat lines (``index``) and by age.
- ``log:push``: the Pub/Sub channel every log entry is also published on, as it is appended
  (a channel, not a key: what nodes that are caught up read instead of the log).
- ``index``: zset log entry id -> the last chat-line offset in it (what trimming by lines reads).
- ``nodes``: zset node -> last heartbeat (Redis TIME seconds).
- ``members:NODE``: the names with a session on NODE (kept by the publish script).
- ``seen``: hash node -> last batch number applied (publish dedup across a lost connection).
- ``refused:NODE``: hash batch -> what the rate limit refused in it, as the entry's ``z`` (JSON
  {name key: lines of it accepted}), for a re-send; expires.
- ``rate``: hash name key -> "tokens stamp": the line bucket per name across all nodes.
- ``moderation``: hash of the room's moderation state (``ban:NAME``, ``mute:NAME``, ``topic``).
- ``crl``: hash ``number`` / ``pem``: the newest CRL any node loaded (see the engine).
"""

from __future__ import annotations

from dataclasses import dataclass

from mtlschat.history.store import ROOM


@dataclass(frozen=True, slots=True)
class RoomKeys:
    """The key names of one room."""

    room: str = ROOM

    @property
    def prefix(self) -> str:
        """What every key of the room starts with (``members:NODE`` is built from it)."""
        return f"mtlschat:{{{self.room}}}:"

    @property
    def epoch(self) -> str:
        return self.prefix + "epoch"

    @property
    def offset(self) -> str:
        return self.prefix + "offset"

    @property
    def log(self) -> str:
        return self.prefix + "log"

    @property
    def push(self) -> str:
        """The channel the log's entries are published on (see stream.decode_push)."""
        return self.log + ":push"

    @property
    def index(self) -> str:
        return self.prefix + "index"

    @property
    def nodes(self) -> str:
        return self.prefix + "nodes"

    @property
    def seen(self) -> str:
        return self.prefix + "seen"

    @property
    def rate(self) -> str:
        return self.prefix + "rate"

    @property
    def moderation(self) -> str:
        return self.prefix + "moderation"

    @property
    def crl(self) -> str:
        return self.prefix + "crl"

    def members(self, node: str) -> str:
        """The set of names with a session on ``node``."""
        return self.prefix + "members:" + node

    def refused(self, node: str) -> str:
        """Hash batch number -> its refusals (JSON {name key: lines accepted}), for ``node``'s
        re-sent batches."""
        return self.prefix + "refused:" + node
