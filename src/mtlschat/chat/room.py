"""The chat room, sans-I/O: decrypted bytes in, per-session output bytes out.

The event loop (``mtlschat.net.server``) drives it; see ``docs/architecture.md`` for the contract
and ``docs/protocol.md`` for what clients see. Nothing here touches a socket, a thread or ssl.

How output is built, cheaply
----------------------------
During a loop round, broadcasts are appended to one round list (``_events``), not to sessions.
A session that needs anything of its own this round -- it sent a broadcast (it must not get its
own line back), received a private line, joined or left -- records *ops*: ``(mark, bytes)`` for a
private line queued when the round list had ``mark`` entries, ``(index, None)`` for "skip
broadcast ``index``, it is mine". ``flush()`` then encodes each broadcast once per mode in use,
joins the round once per mode, and hands that same ``bytes`` object to every session without ops.
A session with ops gets slices of the shared join stitched around its own lines: O(its ops)
Python work, no per-message loop. So a round costs O(messages + sessions), never
O(messages x sessions).
"""

from __future__ import annotations

import bisect
import enum
import itertools
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from mtlschat.ca.names import NAME_POLICY, is_valid_username, name_key
from mtlschat.chat.budget import INPUT_FACTOR, NameBudget
from mtlschat.chat.commands import COMMANDS, apply_moderation
from mtlschat.chat.framing import FramingError, LineDecoder
from mtlschat.chat.moderation import Moderation, describe_ban
from mtlschat.chat.presence import Presence
from mtlschat.chat.settings import RoomCounters, RoomSettings
from mtlschat.chat.wire import (
    BAD_NAME,
    BANNED,
    MUTED,
    NOT_DELIVERED,
    NOT_OPERATOR,
    RATE_LIMITED,
    TOO_MANY_JOINS,
    TOO_MANY_SESSIONS,
    UNKNOWN_COMMAND,
    Bye,
    Dm,
    Error,
    Event,
    HistoryEnd,
    HistoryStart,
    Info,
    Join,
    Leave,
    Lines,
    Mode,
    Ping,
    Replayed,
    Welcome,
    clean_text,
    shorten,
)
from mtlschat.history.journal import Journal
from mtlschat.history.memory import MemoryStore
from mtlschat.history.store import ACTION, DM, HIDDEN, INFO, JOIN, LEAVE, MOD, MSG, Record

__all__ = ["Mode", "Outgoing", "Refusal", "Room", "RoomCounters", "RoomSettings", "Session"]

_MODES = (Mode.TEXT, Mode.JSON)
_new = tuple.__new__  # a NamedTuple from a tuple, skipping its Python-level __new__ (hot paths)
audit_log = logging.getLogger("mtlschat.audit")  # who did what to whom, and why
_origins = random.Random()  # seeded from os.urandom
HISTORY_DEGRADED = "history: lines are not being saved right now; chat goes on"
log = logging.getLogger("mtlschat.room")


class Outgoing(NamedTuple):
    """A record a relayed room publishes, and the id of the session it came from (if any): the
    one told when it cannot be delivered (:meth:`Room.refuse`)."""

    record: Record
    session: int | None


class Refusal(enum.Enum):
    """Why :meth:`Room.open` refused a session: the ``error`` code and the ``bye`` reason."""

    BAD_NAME = (BAD_NAME, "bad name")  # the certificate's CN fails the username policy
    TOO_MANY_SESSIONS = (TOO_MANY_SESSIONS, "too many sessions")  # over sessions_per_name
    TOO_MANY_JOINS = (TOO_MANY_JOINS, "joining too often")  # the name's join bucket is empty
    BANNED = (BANNED, "banned")  # an operator banned the name (/ban, mtlschat admin ban)

    def __init__(self, code: str, reason: str) -> None:
        self.code = code  # the protocol error code (docs/protocol.md); also the counter's key
        self.reason = reason  # the bye reason, and what the driver logs


class _Member:
    """One name in the room: its sessions and its budget (shared by its sessions, and kept by
    the room after the last one leaves)."""

    __slots__ = ("budget", "name", "sessions")

    def __init__(self, name: str, budget: NameBudget) -> None:
        self.name = name
        self.sessions: list[Session] = []
        self.budget = budget


class Session:
    """One verified connection. The driver reads ``closing`` and calls ``take_output()``."""

    __slots__ = (
        "_closed",
        "_decoder",
        "_last_seen",
        "_member",
        "_notice_at",
        "_ops",
        "_out",
        "_ping_at",
        "_start",
        "_stop",
        "closing",
        "id",
        "mode",
        "name",
        "origin",
        "refused",
    )

    def __init__(self, sid: int, name: str, mode: Mode, max_line: int, now: float):
        self.id = sid
        self.name = name
        self.mode = mode
        # Set (to the reason) when the room wants the connection closed once output is flushed.
        self.closing: str | None = None
        self.refused: Refusal | None = None  # set by open() when the session never got in
        self._closed = False
        self._decoder = LineDecoder(max_line)
        self._member: _Member | None = None
        self._out = b""  # flushed output not yet taken by the driver
        self._ops: list[tuple[int, bytes | None]] | None = None  # this round's own ops
        self._start = 0  # round index this session's broadcasts start at (it opened mid-round)
        self._stop: int | None = None  # round index it stopped receiving at (it left)
        self._last_seen = now
        self._ping_at = now
        self._notice_at = -1e18  # last rate-limit notice
        # Tags this session's lines in the history, so a /resume from its client (which showed
        # them when they were typed) does not get them back. Random: unique across restarts.
        self.origin = _origins.getrandbits(53)  # (53 bits: exact in any JSON reader)

    def take_output(self) -> bytes:
        """Everything flushed for this client so far, joined; clears the queue."""
        out = self._out
        self._out = b""
        return out

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.name!r} {self.mode.name} closing={self.closing!r}>"


class Room:
    """A single chat room. All methods are cheap and never raise on client input."""

    def __init__(
        self,
        settings: RoomSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        history: Journal | None = None,
        moderation: Moderation | None = None,
        relay: bool = False,
        node: str = "",
    ) -> None:
        """``clock`` times every timer and limit; ``wall`` only stamps what people are shown.

        ``relay``: one room over several nodes (docs/architecture.md, "Relay mode"): what
        members say is published (:meth:`take_outbox`) and shown once :meth:`deliver` brings it
        back in the global order; ``history`` is then a Journal over a mirror
        (:class:`~mtlschat.history.memory.MemoryStore`). ``node`` names this node in records.
        """
        self.settings = settings or RoomSettings()
        self.moderation = moderation or Moderation()
        self.clock = clock
        self.wall = wall
        self.counters = RoomCounters()
        self.history = history
        self._ids = itertools.count(1)
        # Message ids are the history's offsets: they continue across restarts.
        self._last_id = history.last_offset if history is not None else 0
        self._sessions: dict[int, Session] = {}  # every open session, closing ones included
        self._members: dict[int, Session] = {}  # sessions in the room (they get broadcasts)
        self._names: dict[str, _Member] = {}  # name_key -> member
        self._budgets: dict[str, NameBudget] = {}  # name_key -> budget, members' and resting
        self._resting: set[str] = set()  # keys of budgets whose name has no session left
        self._online: list[str] = []  # member names, kept sorted (bisect) as they come and go
        self._mode_count = [0, 0]  # members per mode: encode only for modes someone uses
        self._events: list[Event] = []  # this round's broadcasts
        self._special: dict[int, Session] = {}  # sessions with ops this round
        # Relay mode (several nodes, one room): see the "relay mode" section below.
        self.node = node  # this node's id in the records it publishes
        self._relay = False
        self._presence = Presence()  # global presence, from delivered join/leave records
        self._outbox: list[Outgoing] = []  # published this round, for the engine to send
        self._local: dict[int, Session] = {}  # origin -> member session (to skip its echo)
        self._degraded: str | None = None  # why lines cannot be delivered, while they cannot
        self._actor: Session | None = None  # the session whose command runs (told of refusals)
        self.relay = relay

    @property
    def relay(self) -> bool:
        """Whether this room is one of several nodes (set before any session opens)."""
        return self._relay

    @relay.setter
    def relay(self, on: bool) -> None:
        if self._members:
            raise ValueError("relay mode is chosen before any session opens")
        self._relay = on
        # /who and the welcome list global presence in relay mode, local members otherwise.
        self._online = self._presence.online if on else []

    # ---- the driver's API (docs/architecture.md) -------------------------------------------

    def open(self, name: str, mode: Mode) -> Session:
        """A verified handshake: add a session for certificate CN ``name``; queue its welcome.

        A refused session (see :class:`Refusal`) has ``refused`` set and gets an ``error`` and a
        ``bye``; it is marked closing without ever entering the room.
        """
        now = self.clock()
        s = Session(next(self._ids), name, Mode(mode), self.settings.max_line, now)
        s._start = len(self._events)
        self._sessions[s.id] = s
        self.counters.sessions_opened += 1
        st = self.settings
        if not is_valid_username(name):
            self._refuse(s, Refusal.BAD_NAME, f"certificate name {name!r} refused: {NAME_POLICY}")
            return s
        ban = self.moderation.banned(name, self.wall())
        if ban is not None:
            self._refuse(s, Refusal.BANNED, describe_ban(ban))
            return s
        key = name_key(name)
        member = self._names.get(key)
        cap = st.sessions_per_name
        if member is not None and cap and len(member.sessions) >= cap:
            text = f"{name} has {cap} sessions open already (the most allowed)"
            self._refuse(s, Refusal.TOO_MANY_SESSIONS, text)
            return s
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = NameBudget(
                st.rate, st.burst, st.join_rate, st.join_burst, now
            )
            self._resting.add(key)
        if budget.joins is not None and not budget.joins.take(now):
            wait = (1.0 - budget.joins.tokens) / budget.joins.rate
            text = f"{name} joined too often: try again in {math.ceil(wait)} s"
            self._refuse(s, Refusal.TOO_MANY_JOINS, text)
            return s
        first = member is None
        relay = self._relay
        if member is None:
            member = self._names[key] = _Member(name, budget)
            self._resting.discard(key)
            if not relay:
                bisect.insort(self._online, name)
        member.sessions.append(s)
        s._member = member
        self._members[s.id] = s
        self._mode_count[s.mode] += 1
        online, count = self._online[: st.welcome_names], len(self._online)
        if relay:
            self._local[s.origin] = s
            if self._presence.find(name) is None:  # its join is not back yet: list it anyway
                bisect.insort(online, name)
                del online[st.welcome_names :]
                count += 1
        self.send(
            s,
            Welcome(
                name,
                online,
                count,
                st.server_version,
                st.max_line,
                st.rate,
                st.burst,
                st.keepalive,
                st.idle_timeout,
                None if self.history is None else (self.history.epoch, self._last_id, s.origin),
            ),
        )
        topic = self.moderation.topic
        if topic is not None:
            self.send(s, Info(f"topic: {topic.text} (set by {topic.by})"))
        if st.motd:
            self.send(s, Info(st.motd))
        if self.history is not None:
            if st.history_join:
                self.replay(s, self.history.last(st.history_join, name), "join")
            if self.history.degraded is not None:
                self.send(s, Info(HISTORY_DEGRADED))
        if relay:
            if self._degraded is not None:
                self.send(s, Info(_degraded_text(self._degraded)))
            if first:  # this node has the name now; the room hears it when it is delivered
                self.publish(Record(0, self.wall(), JOIN, name, "", "", s.origin, self.node))
        elif first and self._announcing():
            self.broadcast(Join(self.wall(), name), s)
        return s

    def feed(self, s: Session, data: bytes) -> None:
        """Decrypted bytes from ``s``'s client, in any split; every complete line is handled."""
        if s.closing is not None:
            return  # said bye already (or was never admitted): ignore the rest
        now = self.clock()
        s._last_seen = now
        rate = self.settings.rate
        member = s._member
        assert member is not None  # (a session that is not closing is a member)
        inputs = member.budget.input
        dropped = 0
        if inputs is not None and (n := data.count(b"\n")):
            allowed = inputs.take_up_to(now, n)
            if allowed == n:
                lines = s._decoder.feed(data)
            else:
                lines = self._within_budget(s, data, allowed)
                dropped = n - allowed
        else:
            lines = s._decoder.feed(data)
        ts = self.wall()  # what people see; the timers and limits use now
        relay = self._relay
        node = self.node
        # The event of this call's lines so far, while nothing else was queued after them: the
        # next line joins it (one event per run of lines: encoded in one pass, one skip mark).
        run: Lines | None = None
        for line in lines:
            if type(line) is not str:
                # Refused lines take a token too: a flood of garbage costs its sender a few
                # notices, not the server one error line per input line.
                assert isinstance(line, FramingError)
                run = None
                bad = self.counters.bad_lines
                bad[line.code] = bad.get(line.code, 0) + 1
                if not rate or self.allow(s, now):
                    self.error(s, line.code, line.text)
                continue
            if line[0] == "/":
                if line[1:2] != "/":
                    run = None  # (a command may queue anything, for anyone: lines after it follow)
                    self._command(s, line, now, ts)
                    if s.closing is not None:
                        return
                    continue
                line = line[1:]  # "//text" is the chat line "/text"
            elif line.isspace():
                continue
            if rate and not self.allow(s, now):
                run = None
                continue
            if self.moderation.mutes and self.muted(s, now, ts):
                run = None
                continue
            if relay:
                # say(s, MSG...) inlined: published, shown once the log delivers it back. The
                # tuples are made without the NamedTuples' Python-level __new__ (a burst's lines
                # all pass here).
                if self._degraded is None:
                    record = _new(
                        Record, (0, ts, MSG, s.name, clean_text(line), "", s.origin, node)
                    )
                    self._outbox.append(_new(Outgoing, (record, s.id)))
                else:
                    self.say(s, MSG, clean_text(line), ts)  # (refused, and s is told)
                continue
            # The happy path, say(s, MSG...) inlined: an id, the history, and the line joins
            # this call's run (or starts one: an event in the round list, one op for the sender).
            self._last_id += 1
            text = clean_text(line)
            if self.history is not None:
                row = (self._last_id, ts, MSG, s.name, text, "", s.origin, "")
                self.history.add(_new(Record, row))
            self.counters.messages += 1
            events = self._events
            if run is not None and events[-1] is run:
                run.bodies.append(text)
                continue
            run = Lines(MSG, self._last_id, ts, s.name, [text])
            events.append(run)
            ops = s._ops
            if ops is None:
                ops = self._ops_of(s)
            ops.append((len(events) - 1, None))
        if dropped:
            self.counters.input_dropped += dropped
            overrun = member.budget.overrun
            if overrun is not None and overrun.take_up_to(now, dropped) < dropped:
                self.end(s, "flooding")  # far over its budget, for long: not a person typing
                return
            limit = self.settings.rate * INPUT_FACTOR
            self._notice(s, now, f"too many lines (over {limit:g}/s): {dropped} dropped unread")

    def end(
        self,
        s: Session,
        reason: str,
        *,
        gone: bool = False,
        leave: str | None = None,
        announce: bool = True,
    ) -> None:
        """The one way a session ends, whoever ends it; idempotent (the first reason stays).

        The room ends it (``gone=False``: quit, idle, revoked, refused...): ``s`` gets ``bye``
        (``reason``), is marked ``closing`` and leaves the room; the driver flushes the bye,
        closes the transport, then calls ``end(s, ..., gone=True)``.
        The transport is gone (``gone=True``: peer closed, I/O error, slow consumer, or the
        closing above is done): the session is forgotten, no bye. Either way, the others see it
        leave with ``leave`` (default ``reason``) if it was the name's last session and
        ``announce`` is true.
        """
        if s._closed:
            return
        if s.closing is None:
            s.closing = reason
            if not gone:
                self.send(s, Bye(reason))
        self._depart(s, leave or reason, announce=announce)
        if gone:
            s._closed = True
            del self._sessions[s.id]
            self._special.pop(s.id, None)
            s._ops = None
            s._out = b""
            self.counters.sessions_closed += 1

    def tick(self) -> None:
        """Keepalive pings after ``keepalive`` s of silence; ``bye`` after ``idle_timeout`` s.

        Also forgets the budgets of names that left once they are full again (memory stays
        bounded by the names seen within a bucket's refill time), and the history's bounded
        upkeep (retention, search index).
        """
        now = self.clock()
        if self.history is not None:
            self.history.tick(self.wall())  # retention is about the lines' (wall-clock) times
        keepalive = self.settings.keepalive
        idle = self.settings.idle_timeout
        for s in list(self._members.values()):
            if now - s._last_seen >= idle:
                self.end(s, "idle timeout")
            elif now - max(s._last_seen, s._ping_at) >= keepalive:
                s._ping_at = now
                self.send(s, Ping(self.wall()))
        if self._resting:
            budgets = self._budgets
            for key in [key for key in self._resting if not budgets[key].spent(now)]:
                self._resting.remove(key)
                del budgets[key]

    def flush(self) -> list[Session]:
        """End of a loop round: build every session's output; return those with output pending.

        With history on, the round's lines are stored first (one transaction), so a line any
        member is sent is already in the store if the process dies right after.
        """
        if self.history is not None:
            change = self.history.commit()
            if change == "degraded":
                self.broadcast(Info(HISTORY_DEGRADED))
            elif change == "recovered":
                self.broadcast(Info("history: saving again"))
        events = self._events
        n = len(events)
        ready: list[Session] = []
        joined: list[bytes] = [b"", b""]
        # Lines before each event (a Lines event counts one per line): deliveries are lines.
        before = list(itertools.accumulate(map(_lines_of, events), initial=0)) if n else [0]
        offsets: list[list[int] | None] = [None, None]
        encoded: list[list[bytes] | None] = [None, None]

        def encode(mode: Mode) -> list[bytes]:
            parts = encoded[mode]
            if parts is None:
                if mode is Mode.JSON:
                    parts = encoded[mode] = [ev.json() for ev in events]
                else:
                    parts = encoded[mode] = [ev.text() for ev in events]
                joined[mode] = b"".join(parts)
            return parts

        if n:
            self._events = []
            for mode in _MODES:
                if self._mode_count[mode]:
                    encode(mode)
            for s in self._members.values():
                if s._ops is None:
                    # The same bytes object for all of them (unless the driver left some untaken).
                    s._out = s._out + joined[s.mode] if s._out else joined[s.mode]
                    ready.append(s)
            self.counters.deliveries += before[n] * len(ready)
        if self._special:
            delivered = 0
            for s in self._special.values():
                ops = s._ops
                assert ops is not None
                s._ops = None
                stop = n if s._stop is None else s._stop
                start = s._start
                s._start = 0
                if s._stop is not None:
                    s._stop = 0  # gone: later rounds' broadcasts are not for it
                view = memoryview(b"")
                offs = [0]
                if n:
                    parts = encode(s.mode)
                    cached = offsets[s.mode]
                    if cached is None:
                        cached = offsets[s.mode] = list(
                            itertools.accumulate(map(len, parts), initial=0)
                        )
                    offs = cached
                    view = memoryview(joined[s.mode])
                segments, count = _share_of_round(ops, start, stop, view, offs, before)
                delivered += count
                if segments:
                    mine = b"".join(segments)
                    s._out = s._out + mine if s._out else mine
                if s._out:
                    ready.append(s)
            self._special.clear()
            self.counters.deliveries += delivered
        return ready

    def shutdown(self, reason: str) -> None:
        """``bye`` to everyone; every session is marked closing (no leave announcements)."""
        for s in list(self._sessions.values()):
            self.end(s, reason, announce=False)

    # ---- for command handlers (mtlschat.chat.commands) -------------------------------------

    def sessions(self) -> list[Session]:
        """All open sessions (closing ones included)."""
        return list(self._sessions.values())

    def online(self) -> list[str]:
        """Sorted names of the members (each name once, whatever its number of sessions)."""
        return list(self._online)

    def sessions_of(self, name: str) -> list[Session]:
        """The live sessions of ``name`` (case-insensitive); empty if not online."""
        member = self._names.get(name_key(name))
        return list(member.sessions) if member else []

    def remembered_names(self) -> int:
        """Names whose budget the room holds: those online, and those that left with a bucket
        not yet full again (forgotten by :meth:`tick`)."""
        return len(self._budgets)

    def next_id(self) -> int:
        """A new message id (ids are strictly increasing across msg, action and dm)."""
        self._last_id += 1
        return self._last_id

    def send(self, s: Session, ev: Event) -> None:
        """Queue ``ev`` for ``s`` alone, in order with this round's broadcasts."""
        if not s._closed:
            self._ops_of(s).append((len(self._events), ev.encode(s.mode)))

    def remember(self, record: Record) -> None:
        """Keep a line handed out by a command (``/me``, ``/msg``) in the history, if any."""
        if self.history is not None:
            self.history.add(record)

    def replay(self, s: Session, records: list[Record], source: str, query: str = "") -> None:
        """Send stored lines to ``s``, announced and marked as history (``source``)."""
        if source == "join" and not records:
            return
        if source != "resume":
            self.send(s, HistoryStart(source, len(records), query))
        for record in records:
            self.send(s, Replayed(record, source))
        if records and source != "resume" and s.mode is Mode.TEXT:
            self.send(s, HistoryEnd())

    def error(self, s: Session, code: str, text: str) -> None:
        """Queue an ``error`` for ``s`` (only that client hears about its mistakes)."""
        self.counters.errors += 1
        self.send(s, Error(code, text))

    def broadcast(self, ev: Event, sender: Session | None = None) -> None:
        """Queue ``ev`` for every member except ``sender``. Encoded at flush, once per mode."""
        # The one door for room-wide events: history and a cross-node fan-out would hook here.
        self._events.append(ev)
        if sender is not None:
            self._ops_of(sender).append((len(self._events) - 1, None))

    def allow(self, s: Session, now: float) -> bool:
        """Take a token from ``s``'s name's line bucket; on refusal send (at most 1/s) a notice.

        ``now`` is the room's (monotonic) clock.
        """
        m = s._member
        if m is None:
            return False
        bucket = m.budget.lines
        if bucket is None or bucket.take(now):
            return True
        self.counters.rate_limited += 1
        self._notice(s, now, f"rate limited ({self.settings.rate:g} lines/s): line dropped")
        return False

    def set_mode(self, s: Session, mode: Mode) -> None:
        """Switch what ``s`` receives from now on (what came before stays in the old mode)."""
        self._settle(s)
        if s.id in self._members:
            self._mode_count[s.mode] -= 1
            self._mode_count[mode] += 1
        s.mode = mode

    def find_online(self, name: str) -> str | None:
        """The online name matching ``name`` (case-insensitively) as it is shown, else None.

        In relay mode: online on any node.
        """
        if self._relay:
            return self._presence.find(name)
        member = self._names.get(name_key(name))
        return member.sessions[0].name if member else None

    def say(
        self, s: Session | None, kind: str, text: str, ts: float, to: str = "", sender: str = ""
    ) -> bool:
        """Say something to the room: the one door for lines (``MSG``, ``ACTION``), private
        messages (``DM``, to ``to``) and announcements (``INFO``) -- from session ``s``, or from
        ``sender`` (an operator acting from outside the room). ``text`` is clean already.

        Alone, the room hands the line its id, queues it for the members and keeps it in the
        history at once; in relay mode it is published instead, and shown everywhere when
        delivered. False if it was refused (relay mode, degraded: ``s`` is told).
        """
        name = s.name if s is not None else sender
        if self._relay:
            origin = s.origin if s is not None else 0
            return self.publish(Record(0, ts, kind, name, text, to, origin, self.node), s)
        if kind == INFO:
            self.broadcast(Info(text))
            return True
        assert s is not None  # (members say lines; operators from outside only announce)
        self.counters.messages += 1
        offset = self.next_id()
        self.remember(Record(offset, ts, kind, name, text, to, s.origin))
        if kind == DM:
            self._send_dm(Dm(offset, ts, name, to, text))
        else:
            self.broadcast(Lines(kind, offset, ts, name, [text]), s)
        return True

    def _send_dm(self, ev: Dm) -> None:
        # To every session of the recipient, echoed to every session of the sender; once each.
        seen: set[int] = set()
        for peer in (*self.sessions_of(ev.to), *self.sessions_of(ev.sender)):
            if peer.id not in seen:
                seen.add(peer.id)
                self.send(peer, ev)

    def moderate(self, op: Mapping[str, object]) -> bool:
        """Apply a moderation change (``{"op": "kick" | "ban" | ..., ...}``, see
        :func:`~mtlschat.chat.commands.apply_moderation`): at once alone, on every node once
        delivered in relay mode. False if refused (degraded)."""
        if not self._relay:
            apply_moderation(self, op)
            return True
        text = json.dumps(op, separators=(",", ":"))
        by = str(op.get("by", ""))
        actor = self._actor
        return self.publish(
            Record(0, self.wall(), MOD, by, text, "", actor.origin if actor else 0, self.node),
            actor,
        )

    # ---- relay mode: one room over several nodes (docs/architecture.md) ------------------------

    @property
    def degraded(self) -> str | None:
        """Relay mode: why lines cannot be delivered right now (None while they can)."""
        return self._degraded

    def publish(self, record: Record, s: Session | None = None) -> bool:
        """Relay mode: queue ``record`` (offset 0) for the engine's next :meth:`take_outbox`.

        While degraded, only presence (``JOIN``, ``LEAVE``) is queued; anything else is refused
        at once and ``s`` (if any) gets a visible ``not_delivered`` error. False if refused.
        """
        reason = self._degraded
        if reason is not None and record.kind != JOIN and record.kind != LEAVE:
            if s is not None:
                self.error(s, NOT_DELIVERED, f"not delivered: {_degraded_cause(reason)}")
            return False
        self._outbox.append(Outgoing(record, None if s is None else s.id))
        return True

    def take_outbox(self) -> list[Outgoing]:
        """Relay mode: what was published since the last call, in order; clears it. The engine
        calls it once a round, before :meth:`flush`, and sends it in one pipeline."""
        out = self._outbox
        self._outbox = []
        return out

    def deliver(self, records: Sequence[Record], runs: Sequence[int] | None = None) -> None:
        """Relay mode: records from the shared log, in its one global order (every node gets
        the same sequence). Chat lines go to this node's members (not back to the session that
        said them; DMs to every session of sender and recipient) and into the history mirror;
        join/leave change global presence (announced on its transitions); ``info`` is shown;
        ``mod`` is applied. Output goes out at the next :meth:`flush`.

        ``runs``: where each run of records that differ only in offset and text ends (the end
        index of each, as the log's entries group them: a sender's round is one run); a run of
        room lines is then handled at once, not line by line. None: no runs known.
        """
        if runs is None:
            for r in records:
                self._deliver_one(r)
            return
        start = 0
        for end in runs:
            if records[start].kind in (MSG, ACTION):
                self._deliver_lines(records[start:end] if end - start < len(records) else records)
            else:
                for i in range(start, end):
                    self._deliver_one(records[i])
            start = end

    def _deliver_lines(self, run: Sequence[Record]) -> None:
        # A run of MSG or ACTION lines from one session (see deliver): what _deliver_one does
        # for each, done once for all of them.
        first = run[0]
        last = run[-1].offset
        if last - first.offset != len(run) - 1:  # (not one id after the other: line by line)
            for r in run:
                self._deliver_one(r)
            return
        events = self._events
        events.append(Lines(first.kind, first.offset, first.ts, first.sender, [r[4] for r in run]))
        if first.node == self.node:
            self.counters.messages += len(run)  # counted where it was said
            mine = self._local.get(first.origin)
            if mine is not None:
                self._ops_of(mine).append((len(events) - 1, None))
        if last > self._last_id:
            self._last_id = last
        history = self.history
        if history is not None:
            if first.offset > history.last_offset:
                history.extend(run)
            else:  # (the engine filled the mirror past some of them already)
                for r in run:
                    if r.offset > history.last_offset:
                        history.add(r)

    def _deliver_one(self, r: Record) -> None:
        events = self._events
        kind = r.kind
        if kind in (MSG, ACTION):
            events.append(Lines(kind, r.offset, r.ts, r.sender, [r.text]))
            if r.node == self.node:
                self.counters.messages += 1  # counted where it was said
                mine = self._local.get(r.origin)
                if mine is not None:
                    self._ops_of(mine).append((len(events) - 1, None))
        elif kind == DM:
            if r.node == self.node:
                self.counters.messages += 1
            self._send_dm(Dm(r.offset, r.ts, r.sender, r.to, r.text))
        elif kind == JOIN:
            if self._presence.add(r.sender, r.node) and self._announcing():
                self._announce(Join(r.ts, r.sender))
            return
        elif kind == LEAVE:
            announce = self._announcing()  # counted with the leaver, as alone
            gone = self._presence.remove(r.sender, r.node)
            if gone is not None and announce:
                self._announce(Leave(r.ts, gone, r.text))
            return
        elif kind == INFO:
            self.broadcast(Info(r.text))
            return
        elif kind == MOD:
            self._apply(r)
            return
        elif kind != HIDDEN:
            log.warning("relay: record of unknown kind %r skipped", kind)
            return
        # A chat line: the mirror keeps it with the offset the log gave it (once: the engine
        # may have filled the mirror past it already).
        if r.offset > self._last_id:
            self._last_id = r.offset
        history = self.history
        if history is not None and r.offset > history.last_offset:
            history.add(r)

    def _announce(self, ev: Join | Leave) -> None:
        # A name's arrival or departure, for everyone but the name's own sessions here (alone,
        # none of them is ever told of itself; here one may have opened before its join came).
        self.broadcast(ev)
        member = self._names.get(name_key(ev.name))
        if member is not None:
            mark = len(self._events) - 1
            for s in member.sessions:
                self._ops_of(s).append((mark, None))

    def _apply(self, r: Record) -> None:
        try:
            op = json.loads(r.text)
            if not isinstance(op, dict):
                raise TypeError("not an object")
            apply_moderation(self, op)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("relay: moderation record from node %s skipped: %s", r.node, exc)

    def refuse(self, items: Iterable[Outgoing], code: str, text: str) -> None:
        """Relay mode: these published items will not be delivered (``code``: ``not_delivered``
        or ``rate_limited``). Each session they came from gets one visible ``error`` (``text``,
        with the count when it lost several); nothing is dropped silently."""
        lost: dict[int, int] = {}
        for item in items:
            if item.session is not None:
                lost[item.session] = lost.get(item.session, 0) + 1
            elif item.record.kind != JOIN and item.record.kind != LEAVE:
                log.warning("relay: %s record not delivered: %s", item.record.kind, text)
        for sid, count in lost.items():
            s = self._sessions.get(sid)
            if s is not None and s.closing is None:
                self.error(s, code, text if count == 1 else f"{text} ({count} lines)")

    def set_degraded(self, reason: str | None) -> None:
        """Relay mode: lines cannot be delivered (``reason``), or can again (None). Members are
        told once when it starts and once when it heals; meanwhile lines are refused at once."""
        was = self._degraded
        self._degraded = reason
        if reason is not None and was is None:
            self.broadcast(Info(_degraded_text(reason)))
        elif reason is None and was is not None:
            self.broadcast(Info("the room is back: lines are delivered again"))

    def load_presence(self, names_by_node: dict[str, set[str]]) -> None:
        """Relay mode: global presence from a snapshot (node -> names), e.g. at (re)connect.
        Replaces what was known, silently; this node's own members stay online (it knows
        them better than any snapshot: their joins may not have reached Redis yet)."""
        mine = set(names_by_node.get(self.node, ()))
        mine.update(self.local_names())
        self._presence.load({**names_by_node, self.node: mine})

    def local_names(self) -> list[str]:
        """The names with at least one session on this node."""
        return [m.name for m in self._names.values()]

    def republish_presence(self) -> None:
        """Relay mode: publish a ``join`` for every name this node has (after the shared log
        lost its data, or this node was reaped while cut off)."""
        for member in self._names.values():
            self.publish(Record(0, self.wall(), JOIN, member.name, "", "", 0, self.node))

    def reset_epoch(self, epoch: str, last_offset: int = 0) -> None:
        """Relay mode: the shared history was reset (a new ``epoch``; offsets go on after
        ``last_offset``). The mirror forgets its lines, members are told, new sessions'
        welcome carries the new epoch (a client resuming the old one is told it is gone), and
        a join is queued for every local name (Redis lost who is where, too)."""
        self.load_history(epoch, (), last_offset)
        self.broadcast(Info("history was reset: earlier lines are gone (new epoch)"))
        self.republish_presence()

    def load_history(self, epoch: str, records: Sequence[Record], last_offset: int) -> None:
        """Relay mode: fill the history mirror with the shared log's tail (``records``, oldest
        first) under ``epoch``, the log's last offset being ``last_offset`` (at connect, before
        delivering what follows; silently). Lines the mirror had are replaced."""
        history = self.history
        if history is not None:
            if isinstance(history.store, MemoryStore):
                history.store.load(history.room, epoch, records, last_offset)
            history.reset()
            last_offset = max(last_offset, history.last_offset)
        self._last_id = last_offset

    # ---- internals -------------------------------------------------------------------------

    def _ops_of(self, s: Session) -> list[tuple[int, bytes | None]]:
        ops = s._ops
        if ops is None:
            ops = s._ops = []
            self._special[s.id] = s
        return ops

    def _settle(self, s: Session) -> None:
        # Render s's share of the round so far, now, in its current mode; the rest of the round
        # is built by flush() from here on. O(round) but only on a rare command (/mode).
        ops = self._ops_of(s)
        events = self._events
        n = len(events)
        stop = n if s._stop is None else s._stop
        parts = [ev.encode(s.mode) for ev in events]
        offs = list(itertools.accumulate(map(len, parts), initial=0))
        before = list(itertools.accumulate(map(_lines_of, events), initial=0))
        view = memoryview(b"".join(parts))
        segments, count = _share_of_round(ops, s._start, stop, view, offs, before)
        if segments:
            s._out += b"".join(segments)
            self.counters.deliveries += count
        ops.clear()
        s._start = n

    def _notice(self, s: Session, now: float, text: str) -> None:
        # At most one rate_limited error per second: a flood gets a bounded answer.
        if not 0.0 <= now - s._notice_at < 1.0:
            s._notice_at = now
            self.error(s, RATE_LIMITED, text)

    @staticmethod
    def _within_budget(s: Session, data: bytes, allowed: int) -> list[str | FramingError]:
        # Over the input budget: decode only the first ``allowed`` lines of the chunk and drop
        # the rest unread (C-speed search and slicing, no per-line Python work for a flood).
        cut = 0
        for _ in range(allowed):
            cut = data.index(b"\n", cut) + 1
        lines = s._decoder.feed(data[:cut]) if cut else []
        s._decoder.skip(data[cut:])
        return lines

    def is_operator(self, name: str) -> bool:
        """Whether ``name`` is one of the configured operators (case-insensitively)."""
        key = name_key(name)
        return any(name_key(op) == key for op in self.settings.operators)

    def muted(self, s: Session, now: float, ts: float) -> bool:
        """Whether ``s`` may not speak to the room at wall time ``ts``; if so, tell it (at most
        once a second of ``now``, the timers' clock)."""
        if not self.moderation.muted(s.name, ts):
            return False
        if not 0.0 <= now - s._notice_at < 1.0:
            s._notice_at = now
            self.error(s, MUTED, "you are muted by an operator: line dropped")
        return True

    def audit(self, actor: str, action: str, target: str, detail: str = "") -> None:
        """An operator action: announced to the room and written to the audit log."""
        words = " ".join(w for w in (actor, action, target) if w)
        words += f" ({detail})" if detail else ""
        self.say(self._actor, INFO, clean_text(words), self.wall(), sender=actor)
        audit_log.info(
            "audit: operator=%s action=%s target=%s detail=%s", actor, action, target, detail
        )

    def _refuse(self, s: Session, why: Refusal, text: str) -> None:
        s._stop = s._start  # never a member: none of this round's broadcasts are for it
        s.refused = why
        self.counters.refused[why.code] = self.counters.refused.get(why.code, 0) + 1
        self.send(s, Error(why.code, text))
        self.end(s, why.reason)

    def _depart(self, s: Session, reason: str, *, announce: bool) -> None:
        if self._members.pop(s.id, None) is None:
            return
        if self._relay:
            del self._local[s.origin]
        s._stop = len(self._events)
        self._mode_count[s.mode] -= 1
        member = s._member
        assert member is not None
        member.sessions.remove(s)
        if not member.sessions:
            key = name_key(member.name)
            del self._names[key]
            self._resting.add(key)  # its budget stays until full again (see tick)
            if self._relay:
                # Presence must stay right even when nobody is told (shutdown): always publish.
                text = clean_text(reason)
                self.publish(Record(0, self.wall(), LEAVE, member.name, text, "", 0, self.node))
                return
            announce = announce and self._announcing()  # counted with the leaver, as on join
            online = self._online
            del online[bisect.bisect_left(online, member.name)]
            if announce:
                self.broadcast(Leave(self.wall(), member.name, clean_text(reason)))

    def _announcing(self) -> bool:
        """Whether join/leave lines go out at the room's current size (see ``announce_limit``)."""
        limit = self.settings.announce_limit
        return not limit or len(self._online) <= limit

    def _command(self, s: Session, line: str, now: float, ts: float) -> None:
        word, _, arg = line[1:].partition(" ")
        command = COMMANDS.get(word.lower())
        if (command is None or command.rated) and self.settings.rate and not self.allow(s, now):
            return
        if command is None:
            self.error(s, UNKNOWN_COMMAND, f"unknown command /{shorten(word)} (try /help)")
            return
        if command.operator and not self.is_operator(s.name):
            self.error(s, NOT_OPERATOR, f"/{word.lower()}: not an operator")
            return
        self._actor = s
        try:
            command.handler(self, s, arg.strip(), ts)
        finally:
            self._actor = None


def _degraded_cause(reason: str) -> str:
    return f"the room cannot deliver lines right now ({reason})"


def _degraded_text(reason: str) -> str:
    return f"{_degraded_cause(reason)}: what you send is refused until it is back"


def _lines_of(ev: Event) -> int:
    """How many lines ``ev`` is on the wire."""
    return len(ev.bodies) if type(ev) is Lines else 1


def _share_of_round(
    ops: list[tuple[int, bytes | None]],
    start: int,
    stop: int,
    joined: memoryview,
    offsets: list[int],
    before: list[int],
) -> tuple[list[bytes | memoryview], int]:
    """What one session with ops gets of a round, in order, and how many lines that is.

    The round's broadcasts ``start:stop`` (slices of ``joined``, the round encoded in the
    session's mode; broadcast ``i`` is ``joined[offsets[i]:offsets[i + 1]]`` and comes after
    ``before[i]`` lines), minus the ones it sent (``(index, None)`` ops), with its private lines
    (``(mark, bytes)`` ops) stitched in where the round list stood when they were queued.
    """
    segments: list[bytes | memoryview] = []
    count = 0
    pos = start
    for mark, payload in ops:
        if mark > stop:
            mark = stop
        if mark > pos:
            segments.append(joined[offsets[pos] : offsets[mark]])
            count += before[mark] - before[pos]
        if payload is None:
            pos = mark + 1
        else:
            segments.append(payload)
            count += 1
            pos = mark
    if stop > pos:
        segments.append(joined[offsets[pos] : offsets[stop]])
        count += before[stop] - before[pos]
    return segments, count
