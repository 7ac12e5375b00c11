"""The node engine: binds a relayed :class:`~mtlschat.chat.room.Room` to Redis, in the loop.

One link to Redis, a participant of the server's selectors loop (the loop never waits for
Redis), speaking RESP3 and subscribed to the room's channel:

- Every write is one script (:mod:`mtlschat.cluster.scripts`): once per round the room's outbox
  goes out as ONE publish (a numbered batch); heartbeat and reap every few seconds; hello at
  every (re)connect.
- The feed: every entry appended to the room's log is also pushed on the channel, on this same
  connection. A node that is caught up hands each pushed entry to :meth:`Room.deliver` in the
  log's order (the one order every node sees). A node that is behind (just connected, members
  lagging, a bad entry) reads the log with XRANGE from the last id it has instead, ignoring
  pushes meanwhile, until a read comes back short: on one connection, a reply comes after every
  message published before its command ran and before every one published after, so from then
  on the pushes follow on with nothing missed and nothing twice. The sender's node gets its own
  entry and the publish reply in one read: a relayed line costs Redis one wake-up and each node
  one, not one more per node for a read sent again per line.

Faults, and what members see:

- Redis down, or a reply late by more than ``stall_after`` seconds: the room is degraded (told
  once; new lines refused with a visible error). Batches whose reply was lost are sent again,
  with the same batch number, once the link is back: the publish script skips a batch it already
  applied, so nothing is doubled and nothing a member was not told about is lost.
- Redis restarted empty (its epoch gone): hello creates a new epoch; the room is told its history
  was reset; lost batches are refused (visible), and the mirror is filled from the new log.
- This node reaped by the others (silent for 10 s): its heartbeat says so, and hello announces its
  members again.
- CRL: a node that has a newer CRL (higher CRL number) than Redis publishes it as a ``mod`` record
  ``{"op": "crl", ...}``; the script keeps the newest in Redis, and every node hands a newer one
  to ``on_crl`` (the server verifies it against its own CA before installing it).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mtlschat.chat.commands import apply_moderation
from mtlschat.chat.moderation import Moderation
from mtlschat.chat.room import Outgoing, Room
from mtlschat.chat.wire import NOT_DELIVERED, RATE_LIMITED
from mtlschat.cluster import scripts, stream
from mtlschat.cluster.keys import RoomKeys
from mtlschat.cluster.link import LinkDown, RedisLink
from mtlschat.cluster.resp import Reply, ReplyError
from mtlschat.cluster.url import RedisURL
from mtlschat.history.store import JOIN, LEAVE, MOD, Record

log = logging.getLogger("mtlschat.cluster")

# A node killed just after a heartbeat is reaped, its members announced as left, within
# NODE_TIMEOUT + REAP_EVERY = 12 s (the issue asks for 15): four heartbeats may be missed first.
HEARTBEAT_EVERY = 2.5
REAP_EVERY = 2.0
TRIM_EVERY = 60.0  # seconds between trims of the log by age (--history-days)
STALL_AFTER = 3.0  # seconds a reply may be late before the room is degraded
HELLO_RETRY = 1.0
PAUSE_MAX = 0.5  # seconds the feed may wait for lagging members before delivering anyway
PAUSE_STEP = 0.01  # how often a paused feed looks again when nothing else wakes the loop
MAX_LOST = 10_000  # records kept to re-send after a lost connection; beyond it they are refused

CrlHandler = Callable[[int, bytes], None]


def node_id(prefix: str | None = None) -> str:
    """A node id unique per process: ``HOST-PID-RANDOM`` (``--node`` replaces the host)."""
    return f"{prefix or socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(slots=True)
class EngineCounters:
    """What the engine did (for metrics and tests)."""

    batches: int = 0  # publish scripts sent (resends included)
    published: int = 0  # records sent
    delivered: int = 0  # records read from the log and handed to the room
    pushed: int = 0  # entries taken as they were pushed (the feed was caught up)
    reads: int = 0  # catch-up reads of the log (the feed was behind)
    refused: int = 0  # records refused (rate limit across nodes, Redis down, epoch reset)
    resent: int = 0  # batches sent again after a lost connection
    epochs: int = 0  # epoch changes seen (Redis lost its data)
    gaps: int = 0  # times the log had been trimmed past what this node had read


class Engine:
    """One node of a room on Redis. Drive it from the loop: :meth:`attach` the links, call
    :meth:`after_round` every round before ``room.flush()``, and wake by :meth:`deadline`."""

    def __init__(
        self,
        room: Room,
        url: RedisURL,
        *,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        maxlen: int = 0,
        max_age: float = 0.0,
        trim_every: float = TRIM_EVERY,
        mirror_lines: int = 100_000,
        on_crl: CrlHandler | None = None,
        keys: RoomKeys | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        stall_after: float = STALL_AFTER,
        lagging: Callable[[], bool] | None = None,
    ) -> None:
        """``room`` is a relayed room (its ``node`` set); ``url``, ``password`` and ``tls``
        say how to reach Redis. ``maxlen``: chat lines the log keeps (0: all); ``max_age``:
        entries older than this many seconds are trimmed every ``trim_every`` seconds (0: never);
        ``mirror_lines``: chat lines loaded into the history mirror at connect. ``lagging``:
        whether most of this node's members still have much output queued; if so, what the feed
        has waits (beyond a few thousand records, in Redis) for up to PAUSE_MAX seconds at a
        time, so that a burst relayed faster than members read is not turned into slow-consumer
        disconnects."""
        self.room = room
        self.node = room.node
        self.keys = keys or RoomKeys()
        self.link = RedisLink(
            url,
            name=f"{self.node}/redis",
            password=password,
            tls=tls,
            clock=clock,
            on_state=self._link_state,
            subscribe=[self.keys.push],
            on_push=self._on_push,
        )
        self.maxlen = maxlen
        self.max_age = max_age
        self.trim_every = trim_every
        self._next_trim = 0.0
        self.mirror_lines = mirror_lines
        self.on_crl = on_crl
        self.clock = clock
        self.wall = wall
        self.stall_after = stall_after
        self.counters = EngineCounters()
        self.epoch: str | None = None
        self._hello_sent = False  # on the current connection
        self._hello_retry = 0.0
        self.ready = False  # hello answered (and the mirror loaded) on this connection
        self._waiting: list[Outgoing] = []  # taken while hello is in flight: sent after it
        self._batch = 0
        self._inflight: dict[int, list[Outgoing]] = {}  # batch -> items, reply due
        self._lost: dict[int, list[Outgoing]] = {}  # batch -> items whose reply was lost
        self._extra: list[Outgoing] = []  # the engine's own records (crl)
        self._mirror: stream.MirrorLoad | None = None
        self._mirror_base = ("", 0, "0-0")  # epoch, last offset, stream id the load is up to
        self.last_id: str | None = None  # the feed's position in the log (None: not feeding)
        self.offset = 0  # the last chat-line offset the feed has delivered (or loaded)
        self._per_entry = 1.0  # records per log entry lately (sizes the feed's reads)
        self._backlog: deque[stream.Entry] = deque()  # read from the log, not delivered yet
        self._backlog_records = 0
        self._live = False  # caught up: pushed entries follow on from last_id
        self._round_records = 0  # records delivered this round
        self.lagging = lagging
        self._paused_since: float | None = None  # the feed waits for members to catch up
        self._reading = False  # a catch-up read is outstanding
        self._feed_gen = 0  # bumped when the position jumps: older reads are ignored
        self._next_heartbeat = 0.0
        self._next_reap = 0.0
        self._degraded: str | None = None
        self._down_reason = "connecting to redis"
        self.crl_number = -1  # the newest CRL number Redis is known to have
        self._crl_offer: tuple[int, bytes] | None = None
        self._closing = False
        self._connected_once = False
        self._said_unreachable = False
        room.set_degraded(self._down_reason)
        self._degraded = self._down_reason

    # -- wiring ------------------------------------------------------------------------------

    @property
    def links(self) -> tuple[RedisLink, ...]:
        """The engine's links (for the loop's selector and for metrics): one."""
        return (self.link,)

    def deadline(self) -> float | None:
        """When :meth:`after_round` next has something to do on its own (clock time)."""
        first = self.link.deadline()
        times = [] if first is None else [first]
        if self.ready:
            times += [self._next_heartbeat, self._next_reap]
        if self.link.pending:
            times.append(self.clock() + 0.5)  # watch for a stall
        if self._backlog:  # more to deliver next round (or soon, while members catch up)
            times.append(self.clock() + (PAUSE_STEP if self._paused_since is not None else 0.0))
        return min(times) if times else None

    @property
    def backlog(self) -> int:
        """Log entries read but not delivered yet (a burst, or members lagging)."""
        return len(self._backlog)

    def goodbye(self, reason: str = "node stopped") -> None:
        """The node is stopping: its members are announced as left now, on every node (best
        effort: one write; if it does not make it, the others reap this node within 12 s).
        Nothing is published after it."""
        self._closing = True
        if self.ready:
            call = scripts.bye_call(self.keys, node=self.node, reason=reason)
            self._call(call, _ignore)
            self.link.flush()

    def close(self) -> None:
        """Close the link (outstanding replies are dropped)."""
        self._closing = True
        self.link.close()

    def offer_crl(self, number: int | None, pem: bytes) -> None:
        """This node loaded a CRL: publish it if it is newer than the one Redis has."""
        if number is None:
            return
        if self._crl_offer is None or number > self._crl_offer[0]:
            self._crl_offer = (number, pem)
        if self.ready:
            self._maybe_publish_crl()

    # -- the round ---------------------------------------------------------------------------

    def after_round(self, now: float | None = None) -> None:
        """Once per loop round, before ``room.flush()``: reconnect if due, publish the round's
        records in one batch, heartbeat and reap on time, and keep the degraded state true."""
        now = self.clock() if now is None else now
        if self._closing:
            self.room.take_outbox()  # (leaves: said by goodbye)
            return
        self.link.tick(now)
        items = self.room.take_outbox()
        if self._extra:
            items = self._extra + items
            self._extra = []
        if items:
            if self.ready:
                self._publish(items)
            elif self.link.up and self._hello_sent:
                self._waiting += items
            else:
                self._refuse_now(items, self._down_reason)
        if self.link.up and not self._hello_sent and now >= self._hello_retry:
            self._hello()
        if self.ready:
            if now >= self._next_heartbeat:
                self._next_heartbeat = now + HEARTBEAT_EVERY
                self._call(scripts.heartbeat_call(self.keys, self.node), self._heartbeat_reply)
            if now >= self._next_reap:
                self._next_reap = now + REAP_EVERY
                self._call(scripts.reap_call(self.keys), self._reap_reply)
            if self.max_age and now >= self._next_trim:
                self._next_trim = now + self.trim_every
                self.link.call(stream.xtrim_by_age(self.keys, self.wall() - self.max_age), _ignore)
            self._round_records = 0
            self._drain()  # (reads on when the backlog is empty)
        self._judge(now)
        self.link.flush()

    def _judge(self, now: float) -> None:
        """Degraded while not ready, or while a reply is late."""
        reason: str | None = None
        if not self.ready:
            reason = self._down_reason
        else:
            late = self.link.stalled(now)
            if late > self.stall_after:
                reason = f"redis has not answered for {late:.0f} s"
        if reason is None and self._degraded is not None and self._connected_once:
            log.warning("redis: the room is delivering again")
        elif reason is not None and self._degraded is None:
            log.warning(
                "redis: the room is degraded (%s): lines are refused until it heals", reason
            )
        if (reason is None) != (self._degraded is None):
            self.room.set_degraded(reason)
        self._degraded = reason

    def _refuse_now(self, items: Sequence[Outgoing], why: str) -> None:
        # Presence is not lost: hello writes this node's members afresh at reconnect.
        lines = [o for o in items if o.record.kind not in (JOIN, LEAVE)]
        if lines:
            self.counters.refused += len(lines)
            self.room.refuse(lines, NOT_DELIVERED, f"not delivered: {why}")

    def _call(self, call: scripts.Call, callback: Callable[[Reply], None]) -> None:
        self.link.call(scripts.evalsha(call), functools.partial(self._noscript, call, callback))

    def _noscript(
        self, call: scripts.Call, callback: Callable[[Reply], None], reply: Reply
    ) -> None:
        # Scripts are loaded at connect; a SCRIPT FLUSH since makes EVALSHA fail: send the source.
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            self.link.call(scripts.eval_(call), callback)
        else:
            callback(reply)

    # -- publishing --------------------------------------------------------------------------

    def _publish(self, items: list[Outgoing]) -> None:
        self._batch += 1
        self._send_batch(self._batch, items)

    def _send_batch(self, batch: int, items: list[Outgoing]) -> None:
        assert self.epoch is not None
        st = self.room.settings
        call = scripts.publish_call(
            self.keys,
            epoch=self.epoch,
            node=self.node,
            batch=batch,
            maxlen=self.maxlen,
            rate=st.rate,
            burst=st.burst,
            records=[o.record for o in items],
        )
        self._inflight[batch] = items
        self.counters.batches += 1
        self.counters.published += len(items)
        self._call(call, functools.partial(self._published, batch))

    def _published(self, batch: int, reply: Reply) -> None:
        items = self._inflight.pop(batch, None)
        if items is None:
            return
        if isinstance(reply, LinkDown):
            self._lost[batch] = items  # sent again, same number, after hello
            if sum(len(v) for v in self._lost.values()) > MAX_LOST:
                oldest = min(self._lost)
                self._refuse_now(self._lost.pop(oldest), "redis was away too long")
            return
        if isinstance(reply, ReplyError) or not isinstance(reply, list) or not reply:
            log.error("redis: publish failed: %s", reply)
            self._refuse_now(items, "redis refused it")
            return
        status = reply[0]
        if status in (b"ok", b"dup"):  # (dup: applied before a lost reply; same refusals)
            over = reply[1] if len(reply) > 1 and isinstance(reply[1], bytes) else b""
            if over:
                drop = stream.refused([o.record[1:] for o in items], over)
                lost = [items[i] for i in sorted(drop)]
                self.counters.refused += len(lost)
                self.room.refuse(
                    lost, RATE_LIMITED, "rate limited (across all your sessions): line not sent"
                )
        elif status == b"epoch":
            self._refuse_now(items, "the room's history was reset")
            self._rehello()

    # -- hello -------------------------------------------------------------------------------

    def _hello(self) -> None:
        self._hello_sent = True
        for script in scripts.SCRIPTS:
            self.link.call(["SCRIPT", "LOAD", script.source], _ignore)
        call = scripts.hello_call(
            self.keys,
            node=self.node,
            epoch=secrets.token_hex(8),
            ts=self.wall(),
            names=self.room.local_names(),
        )
        self._call(call, self._hello_reply)

    def _rehello(self) -> None:
        """Say hello again on this connection (the epoch changed, or this node was reaped)."""
        if self.ready:
            self.ready = False
            self._down_reason = "reconnecting to redis"
            self._hello_sent = False

    def _hello_reply(self, reply: Reply) -> None:
        if isinstance(reply, LinkDown):
            return
        if not isinstance(reply, list) or len(reply) < 7:
            log.error("redis: hello failed: %s", reply)
            self._hello_sent = False
            self._hello_retry = self.clock() + HELLO_RETRY
            return
        epoch, last_id = stream.text_of(reply[0]), stream.text_of(reply[1])
        last_offset = int(reply[2]) if isinstance(reply[2], int) else 0
        self._load_moderation(reply[4])
        if self.epoch is None:  # first connect: the mirror is filled, the feed starts after it
            # (self.epoch is set once the mirror is loaded: a connection lost meanwhile starts
            # this over)
            self.room.load_presence(_snapshot(reply[3]))
            self._load_mirror(epoch, last_id, last_offset)
        elif epoch != self.epoch:
            # Redis lost its data. The new log may already hold lines other nodes said since:
            # members here get them too, so the feed reads the new log from its start (and the
            # room puts its lines into the emptied mirror as they come).
            self.counters.epochs += 1
            log.warning("redis: new epoch %s (was %s): the history was reset", epoch, self.epoch)
            lost = [o for items in self._lost.values() for o in items]
            self._lost.clear()
            self._refuse_now(lost, "the room's history was reset")
            self.epoch = epoch
            self.room.reset_epoch(epoch, 0)
            self.room.load_presence(_snapshot(reply[3]))
            self.last_id = "0-0"
            self.offset = 0
            self._behind()  # (a read still out on the old log is not delivered)
            self._ready()
        elif self.last_id is None:  # a reload of the mirror (after a gap) was cut short
            self._load_mirror(epoch, last_id, last_offset)
        else:
            self._ready()
        crl_number = stream.text_of(reply[5])
        if crl_number:
            self.crl_number = int(crl_number)
            if isinstance(reply[6], bytes) and self.on_crl is not None:
                self.on_crl(self.crl_number, reply[6])

    def _load_mirror(self, epoch: str, upto: str, last_offset: int) -> None:
        """Fill the history mirror from the log up to stream id ``upto`` (whose last offset is
        ``last_offset``); the feed pauses meanwhile and goes on after ``upto``."""
        self.last_id = None
        self._behind()
        self._mirror = stream.MirrorLoad(self.keys, upto, self.mirror_lines)
        self._mirror_base = (epoch, last_offset, upto)
        self._load_page()

    def _load_page(self) -> None:
        mirror = self._mirror
        assert mirror is not None
        command = mirror.command()
        if command is None:
            self._mirror_loaded()
        else:
            self.link.call(command, self._page_reply)

    def _page_reply(self, reply: Reply) -> None:
        if isinstance(reply, LinkDown) or self._mirror is None:
            return
        try:
            self._mirror.take(reply)
        except ValueError as exc:
            log.error("redis: cannot read the log: %s", exc)
            self._mirror.done = True
        self._load_page()

    def _mirror_loaded(self) -> None:
        assert self._mirror is not None
        records = self._mirror.records
        self._mirror = None
        epoch, last_offset, last_id = self._mirror_base
        self.room.load_history(epoch, records, last_offset)
        self.epoch = epoch
        self.last_id = last_id
        self.offset = last_offset
        log.info(
            "redis: epoch %s, last offset %d, %d lines of history loaded",
            epoch,
            last_offset,
            len(records),
        )
        self._ready()

    def _ready(self) -> None:
        self.ready = True
        if self._degraded is not None and not self._connected_once:
            self.room.set_degraded(None)  # (silently: the first connect is not a recovery)
            self._degraded = None
        self._connected_once = True
        now = self.clock()
        self._next_heartbeat = now + HEARTBEAT_EVERY
        self._next_reap = now
        for batch in sorted(self._lost):  # same numbers: the script skips what it applied
            self.counters.resent += 1
            self._send_batch(batch, self._lost.pop(batch))
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            self._publish(waiting)
        self._maybe_publish_crl()
        self._drain()

    def _load_moderation(self, raw: Reply) -> None:
        """The moderation state kept in Redis replaces what this node had."""
        room = self.room
        room.moderation = Moderation()
        fields = raw if isinstance(raw, list) else []
        for i in range(1, len(fields), 2):
            try:
                op = json.loads(stream.text_of(fields[i]))
                if isinstance(op, dict):
                    apply_moderation(room, op)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("redis: moderation entry skipped: %s", exc)

    def _maybe_publish_crl(self) -> None:
        offer = self._crl_offer
        if offer is not None and offer[0] > self.crl_number:
            number, pem = offer
            text = json.dumps({"op": "crl", "number": number, "pem": pem.decode("ascii")})
            record = Record(0, self.wall(), MOD, "", text, "", 0, self.node)
            self._extra.append(Outgoing(record, None))
            self.crl_number = number  # (what Redis will have: the script keeps the highest)

    # -- heartbeat, reap ---------------------------------------------------------------------

    def _heartbeat_reply(self, reply: Reply) -> None:
        if reply == 0:
            log.warning("redis: this node was reaped (cut off too long): announcing it again")
            self._rehello()

    def _reap_reply(self, reply: Reply) -> None:
        if isinstance(reply, list) and reply:
            log.warning(
                "redis: nodes silent for %g s reaped: %s",
                scripts.NODE_TIMEOUT,
                ", ".join(stream.text_of(n) for n in reply),
            )

    # -- the feed ----------------------------------------------------------------------------

    def _behind(self) -> None:
        """Forget what was read and not delivered, and any read still out: the feed reads the
        log again from ``last_id`` (once it is set) and pushes are ignored until it is caught up.
        """
        self._live = False
        self._reading = False
        self._feed_gen += 1
        self._backlog.clear()
        self._backlog_records = 0

    def _read(self) -> None:
        """Catch up: read the log after ``last_id`` (pushes are ignored until the reply)."""
        assert self.last_id is not None
        self._reading = True  # (only while behind: _drain reads on when not live)
        self.counters.reads += 1
        count = stream.catch_up_count(self._per_entry)
        reply = functools.partial(self._range_reply, self._feed_gen, count)
        self.link.call(stream.catch_up(self.keys, self.last_id, count), reply)

    def _range_reply(self, gen: int, count: int, reply: Reply) -> None:
        if gen != self._feed_gen:
            return
        self._reading = False
        if isinstance(reply, LinkDown):
            return
        if isinstance(reply, ReplyError):
            log.error("redis: reading the log failed: %s", reply)
            return
        if self.last_id is None:
            return  # an epoch change began meanwhile: the mirror load sets the position
        try:
            entries, last_id, read, errors = stream.range_entries(reply)
        except ValueError as exc:
            log.error("redis: cannot read the log: %s", exc)
            return
        for error in errors:
            log.error("redis: skipped in the log: %s", error)
        if last_id is not None:
            self.last_id = last_id
        self._take(entries)
        # A short read reached the log's end as of when it ran: every entry appended since is
        # pushed after this reply, on this connection. A full one: read on once delivered.
        self._live = read < count
        self._drain()

    def _on_push(self, push: list[object]) -> None:
        """A message of the room's channel: the next entry of the log, if the feed is live."""
        if not self._live or len(push) != 3 or push[0] != b"message":
            return  # (behind: the catch-up reads it from the log)
        last_id = self.last_id
        data = push[2]
        if last_id is None or not isinstance(data, bytes):
            return
        try:
            entry = stream.decode_push(data)
            if stream.id_order(entry.id) <= stream.id_order(last_id):
                return  # (not expected: what follows a catch-up is newer than what it read)
        except ValueError as exc:
            log.error("redis: a pushed entry is unreadable (%s): reading the log instead", exc)
            self._live = False  # (the catch-up skips and names what cannot be decoded)
            self._drain()
            return
        self.last_id = entry.id
        self.counters.pushed += 1
        self._take([entry])
        if self._backlog_records > 2 * stream.FEED_RECORDS or len(self._backlog) >= (
            stream.FEED_COUNT
        ):
            self._live = False  # members here lag: what follows waits in the log
        self._drain()

    def _take(self, entries: list[stream.Entry]) -> None:
        """Queue entries read from the log or pushed, for delivery a round's worth at a time."""
        if not entries:
            return
        records = sum(len(e.records) for e in entries)
        self._per_entry = 0.5 * self._per_entry + 0.5 * records / len(entries)
        self._backlog.extend(entries)
        self._backlog_records += records

    def _drain(self) -> None:
        """Deliver what the feed has, about FEED_RECORDS records a round (an entry is a round
        of the node that said it: several at once would be one giant round for every member
        here); when all is delivered and the feed is behind, read on (what is not read yet
        waits in Redis)."""
        backlog = self._backlog
        if backlog and self.lagging is not None and self._round_records == 0:
            now = self.clock()
            if self.lagging():
                if self._paused_since is None:
                    self._paused_since = now
                if now - self._paused_since < PAUSE_MAX:
                    return  # (members' writes wake the loop; deadline() looks again meanwhile)
            self._paused_since = None
        while backlog and self._round_records < stream.FEED_RECORDS:
            entry = backlog.popleft()
            self._round_records += len(entry.records)
            self._backlog_records -= len(entry.records)
            gap = entry.base - self.offset
            self.offset = max(self.offset, entry.last)
            records = entry.records
            self.counters.delivered += len(records)
            start = 0
            for end in entry.runs:
                if records[start].kind == MOD:  # (a group shares its kind: one look each)
                    for r in records[start:end]:
                        if r.text.startswith('{"op": "crl"'):
                            self._crl_record(r)
                start = end
            self.room.deliver(records, entry.runs)
            if gap > 0:
                # The log was trimmed past what this node had read (cut off longer than the
                # log's retention): those lines are gone for everyone. The mirror is loaded again
                # from the log so that it holds no hole (resume and /history see what Redis has).
                log.warning(
                    "redis: %d lines were trimmed from the log before this node read them: "
                    "reloading its history",
                    gap,
                )
                assert self.epoch is not None
                self.counters.gaps += 1
                self._load_mirror(self.epoch, entry.id, self.offset)  # (clears the backlog)
                return
        if not backlog and not self._live and not self._reading and self.ready and self.last_id:
            self._read()
            self.link.flush()

    def _crl_record(self, r: Record) -> None:
        try:
            op = json.loads(r.text)
            number, pem = int(op["number"]), str(op["pem"]).encode("ascii")
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("redis: crl record from %s skipped: %s", r.node, exc)
            return
        if number > self.crl_number:
            self.crl_number = number
        if r.node != self.node and self.on_crl is not None:
            self.on_crl(number, pem)

    # -- link states -------------------------------------------------------------------------

    def _link_state(self, state: str, reason: str) -> None:
        if state == "up":
            return  # hello goes out at the next round
        self._down_reason = f"redis unreachable ({reason})"
        if not self._connected_once and not self._said_unreachable:
            self._said_unreachable = True
            log.error(
                "redis: unreachable at startup (%s): members can connect, their lines are refused "
                "until it answers; retrying (0.1 s, doubling up to 5 s)",
                reason,
            )
        self.ready = False
        self._hello_sent = False
        self._mirror = None
        self._live = False  # (pushes were missed while it was down: catch up after hello)
        self._reading = False
        for batch in sorted(self._inflight):  # (the link fails them too; this is belt and braces)
            self._lost[batch] = self._inflight.pop(batch)
        waiting, self._waiting = self._waiting, []
        self._refuse_now(waiting, self._down_reason)


def _snapshot(raw: Reply) -> dict[str, set[str]]:
    fields = raw if isinstance(raw, list) else []
    out: dict[str, set[str]] = {}
    for i in range(0, len(fields) - 1, 2):
        names = fields[i + 1] if isinstance(fields[i + 1], list) else []
        out[stream.text_of(fields[i])] = {stream.text_of(n) for n in names}
    return out


def _ignore(reply: Reply) -> None:
    if isinstance(reply, ReplyError):
        log.error("redis: %s", reply)
