"""The event loop: one selector, non-blocking mutual TLS, driving the sans-I/O :class:`Room`.

Everything with a file descriptor lives here; everything about chat lives in the room. Each loop
round handles all ready sockets (reading each until it would block, within a budget), expires
timers, then asks the room which sessions have output, queues it (no copy) and writes to each
peer whose socket can take it. A peer whose write blocked is written to again only when the
selector says its socket is writable. Timers (handshake timeouts, the room's keepalive tick,
close linger, refused-handshake drains) are folded into the selector timeout: no threads.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import logging
import os
import selectors
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from mtlschat.address import Address
from mtlschat.ca.trust import expiring
from mtlschat.chat.commands import COMMANDS, ModerationRefused
from mtlschat.chat.moderation import Moderation
from mtlschat.chat.room import Mode, Room, RoomSettings
from mtlschat.chat.wire import Info
from mtlschat.cluster.engine import node_id
from mtlschat.fdlimit import raise_fd_limit
from mtlschat.history.journal import Journal
from mtlschat.history.sqlite import SQLiteStore
from mtlschat.history.store import ROOM, HistoryError
from mtlschat.moderation_store import ModerationError, SQLiteModerationStore
from mtlschat.net import control
from mtlschat.net.config import ConfigError, ServerConfig
from mtlschat.net.connection import Connection, State
from mtlschat.net.refusals import RefusalLog
from mtlschat.net.relay import install_crl, mirror_history, open_engine
from mtlschat.net.stats import LoopStats
from mtlschat.net.tls import ServerTrust, TLSSetupError, load_trust, peer_identity
from mtlschat.tlserror import tls_reason

log = logging.getLogger("mtlschat.server")

READ_CHUNK = 65536  # one recv asks for this much (OpenSSL returns at most one record)
READ_BUDGET = 256 * 1024  # bytes read from one peer per round before the others get their turn
WRITE_CHUNK = 64 * 1024  # queued pieces are joined up to this for one TLS write
WRITE_BUDGET = 256 * 1024  # bytes written to one peer per round before the others get theirs
ACCEPT_BATCH = 256  # accepts per round, so a connect flood cannot starve established peers
# Seconds of TLS handshakes per round (each costs ~1 ms of CPU per flight): in a join storm the
# ready handshakes past it wait for the next round, so members already in are served between.
HANDSHAKE_SLICE = 0.02
LISTEN_BACKLOG = 4096
CLOSE_LINGER = 5.0  # seconds a closing peer gets to take its last bytes (bye) before we cut it
SHUTDOWN_GRACE = 3.0  # seconds to flush goodbyes on SIGTERM before closing everyone
REJECT_DRAIN = 1.0  # seconds a refused handshake's peer gets to read our alert and close
DRAIN_BUDGET = 64 * 1024  # bytes read (and discarded) from a refused peer before we just close
ACCEPT_PAUSE = 0.1  # back-off after accept() fails for lack of file descriptors
MAX_TICK = 1.0  # the room's tick runs at least this often
WATCH_INTERVAL = 1.0  # seconds between stat()s of the PKI files (a change reloads them)
EXPIRY_WARN_EVERY = 86400.0  # expiry warnings: at startup, then daily

_LISTENER = object()  # selector keys' data for the two non-client sockets
_WAKE = object()
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class LoopParticipant(Protocol):
    """Anything else with a socket in the loop's selector (``data=`` itself), e.g. a
    :class:`mtlschat.cluster.link.RedisLink`: the loop calls ``on_ready(mask)`` when the selector
    reports it ready; it must never block.
    """

    def on_ready(self, mask: int) -> None:
        """Handle the readiness ``mask`` (selectors.EVENT_READ | EVENT_WRITE)."""


def room_settings(config: ServerConfig) -> RoomSettings:
    """The room's share of the server configuration."""
    fields = dataclasses.fields(RoomSettings)
    return RoomSettings(**{f.name: getattr(config, f.name) for f in fields})


def open_history(config: ServerConfig) -> Journal | None:
    """The room's history per the configuration (None with ``--history off``).

    Raises :class:`StartupError` if the file cannot be used (busy, not writable, not a history,
    damaged): the server refuses to start rather than run without the history it was told to
    keep.
    """
    path = config.history_path
    if path is None:
        return None
    try:
        store = SQLiteStore.open(
            path, max_age=config.history_days * 86400.0, max_lines=config.history_lines
        )
    except HistoryError as exc:
        raise StartupError(str(exc)) from None
    return Journal(store, keep_dms=config.history_dms)


def open_moderation(config: ServerConfig) -> SQLiteModerationStore | None:
    """Bans and topic in ``PKI/moderation.db``; None (kept in memory only, logged) if that
    file cannot be used, e.g. a read-only PKI directory: moderation must not stop the room.
    """
    path = config.pki / "moderation.db"
    try:
        return SQLiteModerationStore(path)
    except ModerationError as exc:
        log.error("%s: bans and topic are kept in memory only until a restart", exc)
        return None


class StartupError(Exception):
    """The server cannot start (e.g. the address is in use); the message is one line."""


class ChatServer:
    """A mutual-TLS chat server on one selector. Not thread-safe, except :meth:`request`."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        clock: Callable[[], float] = time.time,
        close_linger: float = CLOSE_LINGER,
        shutdown_grace: float = SHUTDOWN_GRACE,
        reread: Callable[[], dict[str, object]] | None = None,
        reuse_port: bool = False,
    ) -> None:
        """Load the TLS context (raises :class:`~mtlschat.net.tls.TLSSetupError`) and the room.

        ``clock`` is the wall clock: certificate and CRL dates, and the times people are shown.
        Every timer (the room's included) runs on the monotonic clock. ``close_linger`` and
        ``shutdown_grace`` (seconds) are fixed for users; tests shorten them. ``reuse_port``
        binds with ``SO_REUSEPORT``, sharing the port with the other workers
        (:mod:`mtlschat.net.workers`).
        """
        self.config = config
        self.reuse_port = reuse_port
        self.close_linger = close_linger
        self.shutdown_grace = shutdown_grace
        self._clock = clock
        # Refuses to start with a server certificate or CRL that a reload would refuse.
        self._trust = load_trust(
            config.cert_path, config.ca_path, config.crl_path, None, self._now()
        )
        self._watched = self._watch_stamp()
        self._next_watch = 0.0  # monotonic
        self._next_expiry_warning = 0.0  # wall clock
        self._stale_logged = False  # the stale-CRL error was logged for this trust
        self.stats = LoopStats()
        self._reread = reread  # the live settings (operators, motd) as the config file has them now
        relayed = config.redis is not None  # one room over several nodes: see net/relay.py
        self.history = mirror_history(config) if relayed else open_history(config)
        # Relayed, moderation lives in Redis (the engine loads it); alone, in PKI/moderation.db.
        self._moderation_store = None if relayed else open_moderation(config)
        self.room = Room(
            room_settings(config),
            clock=time.monotonic,
            wall=clock,
            history=self.history,
            moderation=Moderation(self._moderation_store, ROOM),
            relay=relayed,
            node=node_id(config.node) if relayed else "",
        )
        self.engine = (
            open_engine(config, self.room, self._install_crl, self._lagging) if relayed else None
        )
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._control: control.ControlServer | None = None  # `mtlschat admin` (--control)
        self.address: tuple[str, int] = (config.host, config.port)
        # Signals and other threads wake the selector through this pair: one byte per signal.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        if self.engine is not None:
            for link in self.engine.links:
                link.attach(self._sel)
            self._offer_crl()
        self._conns: dict[int, Connection] = {}  # by fd: every accepted connection
        self._by_session: dict[int, Connection] = {}  # by Session.id: the open ones
        self._handshakes: collections.deque[Connection] = collections.deque()  # deadline order
        self._closings: collections.deque[Connection] = collections.deque()  # deadline order
        self._drains: collections.deque[Connection] = collections.deque()  # deadline order
        # Handshakes in progress or draining after a refusal: they have their own budget (and a
        # per-address cap), apart from --max-connections, so that clients without a certificate
        # cannot take the places of members.
        self._pending = 0
        self._pending_by_host: dict[str, int] = {}
        self._members = 0  # connections past their handshake (open or closing)
        self._refusals = RefusalLog(log)
        self._dirty: set[Connection] = set()  # have unsent bytes and a socket ready for them
        self._again = False  # the room changed outside a round: run the next one at once
        self._accept_paused_until = 0.0
        # Ready handshakes left for the next round: the loop is short of CPU, so new
        # connections wait in the kernel's backlog until it has caught up.
        self._handshakes_deferred = 0
        self._stopping: str | None = None
        self._old_handlers: dict[int, object] = {}

    # -- public API ------------------------------------------------------------------------

    def bind(self) -> tuple[str, int]:
        """Create the listening socket; return the real (host, port) (``--port 0`` picks one)."""
        host, port = self.config.host, self.config.port
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            sock = socket.create_server(
                (host, port), family=family, backlog=LISTEN_BACKLOG, reuse_port=self.reuse_port
            )
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        # Accepted sockets inherit it: a fixed, small kernel send buffer per peer instead of
        # autotuning up to megabytes, so what a peer has not taken waits in our queue, where
        # the slow-consumer cap sees it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer)
        sock.setblocking(False)
        self._listener = sock
        self._sel.register(sock, selectors.EVENT_READ, _LISTENER)
        self.address = (host, sock.getsockname()[1])
        self._open_control()
        return self.address

    def _open_control(self) -> None:
        """The control socket: refuse to start without one that was asked for (``--control``);
        the default one (``PKI/control.sock``) is not worth refusing for: warn."""
        path = self.config.control_path
        if path is None:
            return
        try:
            listening = control.listen(path)
        except control.ControlError as exc:
            if self.config.control is not None:
                raise StartupError(str(exc)) from None
            log.warning("no control socket, `mtlschat admin` cannot reach this server: %s", exc)
            return
        self._control = control.ControlServer(listening, self._sel, self._admin)
        log.info("control socket %s (mode 0600: `mtlschat admin` for this user and root)", path)

    def _admin(self, command: str, args: str, who: str) -> dict[str, object]:
        """One `mtlschat admin` request (see :mod:`mtlschat.net.control`), as ``admin(shell)``."""
        log.info("control request from %s: %s %s", who, command, args)
        if command == "who":
            return {"ok": True, "sessions": self._who()}
        if command == "stats":
            from mtlschat.net.metrics import snapshot  # (prometheus_client)

            return {"ok": True, "stats": snapshot(self)}
        if command == "reload":  # the same as SIGHUP
            if self.reload():
                return {"ok": True, "text": "reloaded the certificate, CRL, operators and motd"}
            return {
                "ok": False,
                "error": "reload failed: kept the previous certificate and CRL "
                "(the server's log says why)",
            }
        action = COMMANDS[command].action
        assert action is not None, command
        try:
            lines = action(self.room, control.ADMIN_ACTOR, args)
        except ModerationRefused as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "text": "\n".join(lines) if lines else f"done: {command} {args}"}

    def _who(self) -> list[dict[str, object]]:
        """The open sessions: name, address, mode, since (ISO 8601, UTC)."""
        sessions: list[dict[str, object]] = []
        for conn in self._by_session.values():
            session = conn.session
            if conn.state is State.OPEN and session is not None and session.closing is None:
                since = datetime.fromtimestamp(conn.since, UTC).isoformat(timespec="seconds")
                sessions.append(
                    {
                        "name": session.name,
                        "address": conn.peer,
                        "mode": session.mode.name.lower(),
                        "since": since,
                    }
                )
        return sorted(sessions, key=lambda s: (str(s["name"]).casefold(), str(s["since"])))

    @property
    def trust(self) -> ServerTrust:
        """The certificate, CA and CRL in force (replaced whole by each successful reload)."""
        return self._trust

    @property
    def handshakes_pending(self) -> int:
        """Connections still in their TLS handshake (safe to read from another thread)."""
        return max(0, len(self._conns) - len(self._by_session))

    @property
    def connection_count(self) -> int:
        """Accepted connections, handshaking ones included (safe to read from another thread)."""
        return len(self._conns)

    def install_signal_handlers(self) -> None:
        """Route SIGINT/SIGTERM (shutdown) and SIGHUP (reload) into the loop. Main thread only."""
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in _HANDLED_SIGNALS:
            # The C-level handler writes the signal number to the wakeup fd; the loop acts on it.
            self._old_handlers[signum] = signal.signal(signum, lambda _signum, _frame: None)
        # A worker is started with them blocked (so one sent while it starts is not fatal).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED_SIGNALS)

    def request(self, signum: int) -> None:
        """Ask the loop, from any thread, to act as on a signal (SIGTERM stops, SIGHUP reloads)."""
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(bytes([signum]))

    def stop(self) -> None:
        """Thread-safe graceful shutdown request."""
        self.request(signal.SIGTERM)

    def serve(self) -> None:
        """Run until SIGINT/SIGTERM (or :meth:`stop`), then shut down gracefully."""
        nofile = raise_fd_limit()
        if self._listener is None:
            self.bind()
        log.info(
            "listening on %s (max %d connections, fd limit %d, crl %s)",
            _format_peer(self.address),
            self.config.max_connections,
            nofile,
            self.config.crl_path or "none",
        )
        if self.config.crl_path is None:
            log.warning("no CRL: revocation is not enforced (give --crl, or run `mtlschat ca crl`)")
        if self.engine is not None:
            log.info("redis: %s, this node is %s", self.engine.link.url, self.engine.node)
        elif self.history is not None:
            log.info(
                "history: %s (epoch %s, last offset %d%s)",
                self.history.store.location,
                self.history.epoch,
                self.history.last_offset,
                "" if self.history.keep_dms else ", private messages not kept",
            )
        else:
            log.info("history: off")
        self._log_trust()
        # What start-up built (modules, the CLI, TLS and CA objects: ~50k) lives as long as the
        # process: frozen out of the collector's sight, so a full collection walks only what chat
        # made (the first one used to come mid-burst: a 20-30 ms stop).
        gc.collect()
        gc.freeze()
        next_tick = time.monotonic() + self._tick_interval()
        try:
            while self._stopping is None:
                self._round(self._timeout(next_tick))
                now = time.monotonic()
                if now >= next_tick:
                    self.stats.heartbeat = now
                    self.room.tick()
                    next_tick = now + self._tick_interval()
                    if now >= self._next_watch:
                        self._next_watch = now + WATCH_INTERVAL
                        self._watch()
                if self.engine is not None:
                    self.engine.after_round()
                self._flush()
            self._shutdown()
        finally:
            self._close_all()
            gc.unfreeze()  # (an in-process server: the rest of the process collects them again)

    # -- the loop ----------------------------------------------------------------------------

    def _tick_interval(self) -> float:
        return min(MAX_TICK, self.config.keepalive / 4, self.config.idle_timeout / 4)

    def _timeout(self, next_tick: float) -> float:
        if self._again or self._dirty:
            return 0.0
        deadline = next_tick
        if self._control is not None:  # (cuts off stalled control clients; its next deadline)
            deadline = min(deadline, self._control.expire(time.monotonic()))
        if self._handshakes:
            deadline = min(deadline, self._handshakes[0].deadline)
        if self._closings:
            deadline = min(deadline, self._closings[0].deadline)
        if self._drains:
            deadline = min(deadline, self._drains[0].deadline)
        if (summary := self._refusals.deadline) is not None:
            deadline = min(deadline, summary)
        if self._accept_paused_until:
            deadline = min(deadline, self._accept_paused_until)
        if self.engine is not None and (due := self.engine.deadline()) is not None:
            deadline = min(deadline, due)
        return max(0.0, deadline - time.monotonic())

    def _round(self, timeout: float) -> None:
        """Wait for sockets, handle every ready one, then expire timers."""
        self._again = False
        slice_end = 0.0
        deferred = 0
        for key, mask in self._sel.select(timeout):
            data = key.data
            if data is _LISTENER:
                self._accept()
            elif data is _WAKE:
                self._on_wake()
            elif type(data) is Connection:
                if data.state is State.HANDSHAKE:
                    t = time.monotonic()
                    if not slice_end:
                        slice_end = t + HANDSHAKE_SLICE
                    elif t >= slice_end:
                        deferred += 1  # still ready next round (the selector is level-triggered)
                        continue
                self._on_ready(data, mask)
            else:  # a LoopParticipant (a Redis link) handles its own socket
                participant: LoopParticipant = data
                participant.on_ready(mask)
        if deferred:
            self._again = True
        self._handshakes_deferred = deferred
        now = time.monotonic()
        while self._handshakes and self._handshakes[0].deadline <= now:
            conn = self._handshakes.popleft()
            if conn.state is State.HANDSHAKE:
                self._reject(conn, "handshake timeout")
        while self._closings and self._closings[0].deadline <= now:
            conn = self._closings.popleft()
            if conn.state is State.CLOSING:
                self._drop(conn, conn.reason + " (peer did not take its last bytes)")
        while self._drains and self._drains[0].deadline <= now:
            conn = self._drains.popleft()
            if conn.state is State.DRAINING:
                self._release(conn)
        self._refusals.tick(now)
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            if self._listener is not None:
                self._sel.register(self._listener, selectors.EVENT_READ, _LISTENER)

    def _on_wake(self) -> None:
        try:
            data = self._wake_r.recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            if signum in _STOP_SIGNALS:
                self._stopping = signal.Signals(signum).name
            elif signum == signal.SIGHUP:
                self.reload()

    def _accept(self) -> None:
        assert self._listener is not None
        if self._handshakes_deferred:
            # Handshakes already accepted wait for our CPU: new connections wait in the kernel's
            # backlog (no timeout runs there) instead of joining a queue that would outgrow
            # --handshake-timeout, or evicting work under way. Idle sockets defer nothing, so
            # they still meet the evict-the-oldest rule.
            return
        for _ in range(ACCEPT_BATCH):
            try:
                raw, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE/ENFILE: back off rather than spin on a ready listener
                log.warning("accept failed: %s; pausing accepts", exc.strerror or exc)
                self._sel.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE
                return
            host, peer = str(addr[0]), _format_peer(addr)
            cfg = self.config
            if self._members >= cfg.max_connections:
                self._refusals.refused(
                    host, peer, f"max connections ({cfg.max_connections}) reached", "refused"
                )
                self.stats.over_capacity += 1
                raw.close()
                continue
            if self._pending_by_host.get(host, 0) >= cfg.max_handshakes_per_address:
                reason = f"{cfg.max_handshakes_per_address} handshakes pending from this address"
                self._refused(host, peer, reason, "refused")
                raw.close()
                continue
            if self._pending >= cfg.max_handshakes:
                # Make room by dropping the oldest: a member's handshake takes milliseconds, so
                # only a flood faster than max_handshakes per few milliseconds could push it out.
                self._evict_oldest_handshake()
            raw.setblocking(False)
            try:
                sock = self._trust.context.wrap_socket(
                    raw, server_side=True, do_handshake_on_connect=False
                )
            except OSError as exc:
                self._refused(host, peer, tls_reason(exc))
                raw.close()
                continue
            conn = Connection(sock, peer, host, time.monotonic() + cfg.handshake_timeout)
            self._conns[conn.fd] = conn
            self._pending += 1
            self._pending_by_host[host] = self._pending_by_host.get(host, 0) + 1
            self._sel.register(sock, selectors.EVENT_READ, conn)
            self._handshakes.append(conn)
            log.debug("accepted %s", peer)

    def _evict_oldest_handshake(self) -> None:
        for queue in (self._handshakes, self._drains):
            while queue:
                conn = queue.popleft()
                if conn.state is State.HANDSHAKE:
                    self._refused(conn.host, conn.peer, "handshake budget full")
                    self._release(conn)
                    return
                if conn.state is State.DRAINING:
                    self._release(conn)
                    return

    def _on_ready(self, conn: Connection, mask: int) -> None:
        try:
            self._handle(conn, mask)
        except Exception:  # a bug must cost one connection, never the server
            log.exception("internal error on connection from %s; dropping it", conn.peer)
            self._drop(conn, "internal error")

    def _handle(self, conn: Connection, mask: int) -> None:
        state = conn.state
        if state is State.HANDSHAKE:
            self._handshake(conn)
            return
        if state is State.DRAINING:
            self._drain(conn)
            return
        if state is State.CLOSED:
            return
        if mask & selectors.EVENT_READ or (conn.read_wants_write and mask & selectors.EVENT_WRITE):
            self._read(conn)
        if conn.write_waits_for & mask:
            conn.write_waits_for = 0  # the blocked write can go on: at the end of this round
            self._dirty.add(conn)
        elif not conn.read_wants_write and not conn.write_waits_for and not conn.out_bytes:
            # A read that wanted a write has gone through: stop watching for writability, or
            # the always-writable socket would spin the loop until this peer's next output.
            self._want(conn, selectors.EVENT_READ)

    def _handshake(self, conn: Connection) -> None:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        except ssl.SSLCertVerificationError as exc:
            self._reject(conn, exc.verify_message or str(exc), drain=True)
            return
        except ssl.SSLError as exc:
            self._reject(conn, tls_reason(exc), drain=True)
            return
        except OSError as exc:
            self._reject(conn, exc.strerror or str(exc))
            return
        mode = Mode.from_alpn(conn.sock.selected_alpn_protocol())
        identity = peer_identity(conn.sock)
        # Began before a reload (with the previous CRL), or the CRL is stale and so checked here.
        if identity.serial in self._trust.revoked:
            self._reject(conn, "certificate revoked")
            return
        self._leave_pending(conn)
        self._members += 1
        conn.session = self.room.open(identity.name, mode)
        if self._trust.stale_crl and conn.session.closing is None:
            self.room.send(conn.session, Info(self._stale_crl_notice()))
        conn.serial = identity.serial
        conn.since = self._clock()
        conn.state = State.OPEN
        self._by_session[conn.session.id] = conn
        if conn.session.refused is not None:  # error + bye queued: flushed, then closed
            log.info(
                "refused %r from %s: %s", identity.name, conn.peer, conn.session.refused.reason
            )
            return
        self._want(conn, selectors.EVENT_READ)
        self.stats.handshakes_ok += 1
        log.info(
            "connect %s from %s (%s, %s)",
            identity.name,
            conn.peer,
            conn.sock.version(),
            mode.name.lower(),
        )
        # The client's first lines may have arrived with its Finished: already decrypted inside
        # OpenSSL, so the selector will never report them.
        self._read(conn)

    def _read(self, conn: Connection) -> None:
        """Read until the socket would block (or :data:`READ_BUDGET`); feed it all to the room.

        One recv returns at most one TLS record, and a client writing a line at a time sends
        small records: stopping at the first short one would carry one line per round.
        """
        conn.read_wants_write = False
        chunks: list[bytes] = []
        eof: str | None = None
        clean_eof = False
        sock = conn.sock
        try:
            total = 0
            while total < READ_BUDGET:
                data = sock.recv(READ_CHUNK)
                if not data:
                    eof, clean_eof = "closed by peer", True
                    break
                chunks.append(data)
                total += len(data)
            # (Over budget: the others go first; the level-triggered selector brings us back.)
            # Bytes OpenSSL already decrypted are invisible to the selector: take them now.
            while eof is None and (n := sock.pending()) > 0:
                chunks.append(sock.recv(n))
        except ssl.SSLWantReadError:
            pass  # all read (or a partial record, or a post-handshake message: no data)
        except ssl.SSLWantWriteError:
            conn.read_wants_write = True
            self._want(conn, conn.events | selectors.EVENT_WRITE)
        except ssl.SSLError as exc:
            eof = f"TLS error: {tls_reason(exc)}"
        except OSError as exc:
            eof = exc.strerror or "connection lost"
        if chunks:
            self.stats.bytes_in += sum(map(len, chunks))
        if chunks and conn.state is State.OPEN and conn.session is not None:
            self.room.feed(conn.session, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof is None:
            return
        if clean_eof and conn.state is State.OPEN:
            # The peer may only have closed its sending side (`ncat --ssl` after stdin EOF):
            # answer what it sent this round, then close, like any other goodbye.
            self._start_closing(conn, eof)
            self._dirty.add(conn)
        else:
            self._drop(conn, eof)

    def _flush(self) -> None:
        """End of round: hand each session's new output to its peer; write to those that can
        take it."""
        dirty = self._dirty
        self._dirty = set()
        cap = self.config.out_buffer
        by_session = self._by_session
        for session in self.room.flush():
            conn = by_session.get(session.id)
            if conn is None or conn.state is State.CLOSED:
                continue
            data = session.take_output()
            if session.closing is None and not conn.out_bytes and not conn.write_waits_for:
                # The usual case: nothing queued and the socket not known to be full, so the
                # round's bytes (the object every peer without own lines shares) are written
                # as they are, without passing through the queue.
                if data:
                    conn.pending = data
                    conn.out_bytes = len(data)
                    self._send(conn)
                    if conn.out_bytes >= cap:
                        self._slow_consumer(conn)
                continue
            if data:  # (a closing peer still gets its last lines: bye, or answers before EOF)
                conn.queue(data)
            if session.closing is not None and conn.state is State.OPEN:
                self._start_closing(conn, session.closing)
            dirty.discard(conn)
            if not conn.write_waits_for:
                self._send(conn)
            # Judged after the write, so a big round for a peer that keeps up is no offence;
            # a peer whose socket is full is judged on what it has not taken, at once.
            if conn.out_bytes >= cap:  # (0 once closed)
                self._slow_consumer(conn)
        for conn in dirty:  # writable again, or closing with output to push out
            if conn.state is not State.CLOSED and not conn.write_waits_for:
                self._send(conn)

    def _lagging(self) -> bool:
        """Whether most members here have over a quarter of the out-buffer cap unsent (the
        relay's feed then waits a little: see Engine)."""
        mark = self.config.out_buffer // 4
        conns = self._by_session.values()
        return sum(1 for c in conns if c.out_bytes > mark) * 2 > len(conns)

    def _slow_consumer(self, conn: Connection) -> None:
        self.stats.slow_consumers += 1
        self._drop(conn, f"slow consumer: {conn.out_bytes} bytes unsent")

    def _send(self, conn: Connection) -> None:
        """Write queued output until it is all out, the socket is full or the budget is spent."""
        sock = conn.sock
        budget = WRITE_BUDGET
        chunk = conn.pending  # (a blocked write is retried with the very same object)
        while True:
            if chunk is None:
                if not conn.out or budget <= 0:
                    break
                chunk = conn.pending = conn.next_chunk(WRITE_CHUNK)
            try:
                self.stats.bytes_out += sock.send(chunk)
            except ssl.SSLWantWriteError:
                conn.write_waits_for = selectors.EVENT_WRITE
                self._want(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
            except ssl.SSLWantReadError:
                conn.write_waits_for = selectors.EVENT_READ
                self._want(conn, selectors.EVENT_READ)
                return
            except ssl.SSLError as exc:
                self._drop(conn, f"TLS error: {tls_reason(exc)}")
                return
            except OSError as exc:
                self._drop(conn, exc.strerror or "connection lost")
                return
            # Without partial writes, a send that returns has taken the whole chunk.
            conn.pending = None
            conn.out_bytes -= len(chunk)
            budget -= len(chunk)
            chunk = None
        if conn.out_bytes:
            # Budget spent with more queued: the socket is probably writable, so the selector
            # brings us back next round, after everyone else has had a turn.
            conn.write_waits_for = selectors.EVENT_WRITE
            self._want(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        if conn.events != selectors.EVENT_READ and not conn.read_wants_write:
            self._want(conn, selectors.EVENT_READ)
        if conn.state is State.CLOSING:
            self._close_gracefully(conn)

    def _want(self, conn: Connection, events: int) -> None:
        if conn.events != events and conn.state is not State.CLOSED:
            conn.events = events
            self._sel.modify(conn.sock, events, conn)

    # -- closing -----------------------------------------------------------------------------

    def _reject(self, conn: Connection, reason: str, *, drain: bool = False) -> None:
        """Refuse a handshake; with ``drain``, let the peer read the alert OpenSSL has sent.

        Closing a socket with unread input makes the kernel send a reset, which can destroy
        the alert before the peer reads it (Java then reports "Broken pipe", not the reason).
        So: shut our sending side (the alert goes out, then FIN), read and discard what the
        peer still sends until it closes, for at most :data:`REJECT_DRAIN` seconds.
        """
        self._refused(conn.host, conn.peer, reason)
        if not drain:
            self._release(conn)
            return
        try:
            # SSLSocket.shutdown drops the TLS layer (no close_notify) and shuts the TCP side.
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._release(conn)
            return
        conn.state = State.DRAINING
        conn.deadline = time.monotonic() + REJECT_DRAIN
        self._drains.append(conn)
        self._want(conn, selectors.EVENT_READ)
        self._drain(conn)

    def _drain(self, conn: Connection) -> None:
        """Read and discard what a refused peer sends (up to a budget per round) until EOF."""
        total = 0
        try:
            while total < DRAIN_BUDGET:
                data = conn.sock.recv(READ_CHUNK)
                if not data:
                    break  # the peer has closed: it has read our alert
                total += len(data)
            else:
                return  # more next round, until REJECT_DRAIN is up
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._release(conn)

    def _refused(self, host: str, peer: str, reason: str, what: str = "rejected handshake") -> None:
        """Log (or count, in a flood) and count in the metrics one refused connection."""
        self._refusals.refused(host, peer, reason, what)
        self.stats.refused(reason)

    def _leave_pending(self, conn: Connection) -> None:
        self._pending -= 1
        left = self._pending_by_host[conn.host] - 1
        if left:
            self._pending_by_host[conn.host] = left
        else:
            del self._pending_by_host[conn.host]

    def _start_closing(self, conn: Connection, reason: str) -> None:
        """Flush what is queued (the bye), then close; give up after ``close_linger`` s."""
        conn.state = State.CLOSING
        conn.reason = reason
        conn.deadline = time.monotonic() + self.close_linger
        self._closings.append(conn)

    def _close_gracefully(self, conn: Connection) -> None:
        """All output is out: send close_notify (without waiting for the peer's) and close."""
        with contextlib.suppress(OSError, ValueError):
            conn.sock.unwrap()
        self._drop(conn, conn.reason)

    def _drop(self, conn: Connection, reason: str) -> None:
        """Close the transport and tell the room the session is gone."""
        if conn.state is State.CLOSED:
            return
        session = conn.session
        self._release(conn)
        if session is not None:
            self._by_session.pop(session.id, None)
            self.room.end(session, reason, gone=True)
            self._again = True  # others must hear "left" without waiting for the next event
            log.info("disconnect %s from %s: %s", session.name, conn.peer, reason)

    def _release(self, conn: Connection) -> None:
        if conn.state is State.CLOSED:
            return
        if conn.state in (State.HANDSHAKE, State.DRAINING):
            self._leave_pending(conn)
        else:
            self._members -= 1
        conn.state = State.CLOSED
        self._conns.pop(conn.fd, None)
        self._dirty.discard(conn)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()
        conn.clear()

    # -- operations --------------------------------------------------------------------------

    def reload(self) -> bool:
        """Reload the certificate, CA and CRL for new handshakes; kick sessions now revoked.

        A reload that fails any startup check (see :func:`~mtlschat.net.tls.load_trust`) keeps
        everything as it was and logs an error; returns whether the reload took effect.
        """
        cfg = self.config
        self._reload_live_settings()
        try:
            trust = load_trust(cfg.cert_path, cfg.ca_path, cfg.crl_path, self._trust, self._now())
        except TLSSetupError as exc:  # keep serving with what we had
            log.error("reload failed, keeping the previous certificate and CRL: %s", exc)
            self.stats.reloads_failed += 1
            return False
        self.stats.reloads_ok += 1
        self._trust = trust
        revoked = trust.revoked
        kicked = 0
        for conn in list(self._by_session.values()):
            if conn.state is State.OPEN and conn.serial in revoked and conn.session is not None:
                log.info("revoked: %s from %s (serial %x)", conn.name, conn.peer, conn.serial)
                self.room.end(conn.session, "certificate revoked")
                kicked += 1
        self._again = True
        log.info(
            "reloaded server certificate and CRL (%d revoked serials, %d sessions kicked)",
            len(revoked),
            kicked,
        )
        self._stale_logged = False
        self._next_expiry_warning = 0.0
        self._log_trust()
        self._offer_crl()
        return True

    def _offer_crl(self) -> None:
        """Relayed: the CRL in force goes to Redis if it is newer than the other nodes' one."""
        crl = self._trust.crl
        if self.engine is not None and crl is not None:
            with contextlib.suppress(OSError):
                self.engine.offer_crl(crl.number, crl.path.read_bytes())

    def _install_crl(self, number: int, pem: bytes) -> None:
        """Relayed: another node published a newer CRL: check it against our CA, install it
        over ours and reload (which drops the members it revokes)."""
        crl = self._trust.crl
        if crl is not None and crl.number is not None and number <= crl.number:
            return
        target = self.config.crl_path or self.config.pki / "crl.pem"
        if install_crl(pem, target, self._trust.ca_certs, crl):
            log.info("redis: installed CRL number %d published by another node", number)
            self.reload()

    def _reload_live_settings(self) -> None:
        """Operators and motd, re-read from the configuration file (flags and env stay)."""
        if self._reread is None:
            return
        try:
            live = self._reread()
        except ConfigError as exc:
            log.error("reload: keeping the previous operators and motd: %s", exc)
            return
        before = self.room.settings
        self.room.settings = dataclasses.replace(before, **live)  # type: ignore[arg-type]
        if self.room.settings.operators != before.operators:
            log.info("operators: %s", ", ".join(self.room.settings.operators) or "none")

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _watch_stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        """What stat() says about the PKI files; a change means someone rewrote one."""
        cfg = self.config
        crl = cfg.crl_path or (self._trust.crl.path if self._trust.crl else None)
        stamps: list[tuple[int, int, int] | None] = []
        for path in (cfg.cert_path, cfg.ca_path, crl):
            try:
                st = os.stat(path) if path is not None else None
            except OSError:
                st = None
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino) if st is not None else None)
        return tuple(stamps)

    def _watch(self) -> None:
        """From the loop's timer: reload on a changed PKI file; warn as dates come near."""
        stamp = self._watch_stamp()
        if stamp != self._watched:
            self._watched = stamp
            log.info("PKI files changed on disk: reloading")
            self.reload()
            return
        now = self._now()
        crl = self._trust.crl
        if crl is not None and not self._trust.stale_crl and crl.expired(now):
            self.reload()  # the CRL's nextUpdate just passed: stop asking OpenSSL to check it
            return
        self._log_trust()

    def _log_trust(self) -> None:
        """Expiry warnings (at most daily) and the stale-CRL error (once per state change)."""
        now = self._now()
        trust = self._trust
        if trust.stale_crl and not self._stale_logged and trust.crl is not None:
            self._stale_logged = True
            log.error(
                "the CRL %s expired on %s: the server now checks revocation itself against it "
                "(members are let in unless it revokes them, and are told); run `mtlschat ca crl` "
                "to write a current one",
                trust.crl.path,
                _when(trust.crl.next_update),
            )
        if now.timestamp() < self._next_expiry_warning:
            return
        self._next_expiry_warning = now.timestamp() + EXPIRY_WARN_EVERY
        for what, when in expiring(trust.expiries(), now):
            if when <= now:
                log.warning("%s expired on %s", what, _when(when))
            else:
                days = (when - now).total_seconds() / 86400
                log.warning("%s expires on %s (in %.0f days)", what, _when(when), days)

    def _stale_crl_notice(self) -> str:
        crl = self._trust.crl
        when = _when(crl.next_update if crl is not None else None)
        return (
            f"note: this server's certificate revocation list expired on {when}; your own "
            "certificate is fine. Please tell the server's operator (they must run "
            "`mtlschat ca crl`)."
        )

    def _shutdown(self) -> None:
        """Say goodbye to everyone, flush for a short grace period, close_notify, close."""
        log.info("shutting down (%s), %d connections", self._stopping, len(self._conns))
        if self._listener is not None:
            if not self._accept_paused_until:  # (paused accepts already unregistered it)
                self._sel.unregister(self._listener)
            self._listener.close()
            self._listener = None
        for conn in list(self._conns.values()):
            if conn.state in (State.HANDSHAKE, State.DRAINING):
                self._release(conn)
        if self.engine is not None:
            self.engine.goodbye("server shutting down")
        self.room.shutdown("server shutting down")
        self._flush()
        deadline = time.monotonic() + self.shutdown_grace
        while self._conns and time.monotonic() < deadline:
            self._round(min(0.1, max(0.0, deadline - time.monotonic())))
            self._flush()
        for conn in list(self._conns.values()):
            self._drop(conn, "server shutting down")
        self._refusals.summarise(time.monotonic())
        log.info("stopped")

    def _close_all(self) -> None:
        for conn in list(self._conns.values()):
            self._release(conn)
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._old_handlers:
            signal.set_wakeup_fd(-1)
            for signum, handler in self._old_handlers.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
            self._old_handlers.clear()
        if self.engine is not None:
            self.engine.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
        if self.history is not None:
            self.history.close()
            self.history = None
        if self._moderation_store is not None:
            self._moderation_store.close()
            self._moderation_store = None


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment is not None else "(never)"


def _format_peer(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(Address(str(addr[0]), int(addr[1])))
    return str(addr)


def run_server(
    config: ServerConfig,
    reread: Callable[[], dict[str, object]] | None = None,
    *,
    reuse_port: bool = False,
) -> None:
    """Run ``mtlschat server`` in this (main) thread until SIGINT/SIGTERM.

    With ``--metrics`` the exporter runs on a thread of its own; with ``--pidfile`` the PID is
    written once the port is bound and removed on the way out. ``reuse_port``: see
    :class:`ChatServer`.
    """
    server = ChatServer(config, reread=reread, reuse_port=reuse_port)
    server.bind()
    with contextlib.ExitStack() as stack:
        if config.metrics is not None:
            stack.enter_context(_metrics(server, config.metrics, config.node))
        if config.pidfile is not None:
            stack.enter_context(write_pidfile(config.pidfile))
        server.install_signal_handlers()
        server.serve()


@contextlib.contextmanager
def _metrics(server: ChatServer, where: str, node: str | None) -> Iterator[None]:
    from mtlschat.net.metrics import MetricsServer, metrics_address  # (prometheus_client)

    try:
        address = metrics_address(where)
        exporter = MetricsServer(server, address, node or socket.gethostname())
    except ValueError as exc:
        raise StartupError(f"bad --metrics address: {exc}") from None
    except OSError as exc:
        raise StartupError(f"cannot serve metrics on {where}: {exc.strerror or exc}") from None
    exporter.start()
    log.info("metrics on http://%s/metrics (and /healthz)", exporter.address)
    try:
        yield
    finally:
        exporter.close()


@contextlib.contextmanager
def write_pidfile(path: Path) -> Iterator[None]:
    """Write our PID to ``path`` (atomically) for service managers; remove it when done."""
    pid = f"{os.getpid()}\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(pid)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StartupError(f"cannot write the pidfile {path}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text() == pid:  # (not if another server has taken it over)
                path.unlink()
