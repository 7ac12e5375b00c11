"""One non-blocking connection to Redis, as a participant of the server's selectors loop.

The loop never waits for Redis: the link's socket sits in the same selector as the members'
sockets (``data=link``; the server calls :meth:`RedisLink.on_ready` when it is ready), commands
are queued by :meth:`RedisLink.call` and leave in one write per round (pipelining), replies are
parsed by hiredis as they arrive and handed to the callbacks in FIFO order. A Redis that stops
answering (SIGSTOP, a network that drops packets) only makes :meth:`RedisLink.stalled` grow; one
that goes away makes the link report "down", fail what was outstanding and reconnect with
backoff. TLS (``rediss://``) uses a non-blocking handshake in the same loop.

A link made with ``subscribe`` speaks RESP3 and subscribes to those channels at every
(re)connect (it is "up" once they are confirmed), so that what is published on them arrives on
the same connection as the replies, in the order Redis produced them (a command's reply after
every message published before it ran, before every one published after), and goes to
``on_push``.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from mtlschat.backoff import Backoff
from mtlschat.cluster.resp import Arg, ProtocolError, Push, Reply, ReplyError, ReplyParser, encode
from mtlschat.cluster.url import RedisURL
from mtlschat.tlserror import tls_reason

log = logging.getLogger("mtlschat.cluster.link")

LinkState = Literal["up", "down"]
Callback = Callable[[Reply], None]
PushHandler = Callable[[Push], None]

READ_CHUNK = 256 * 1024
READ_BUDGET = 4 * 1024 * 1024  # bytes taken per on_ready before the other sockets get a turn
CONNECT_TIMEOUT = 5.0  # TCP connect + TLS handshake + AUTH/SELECT/SETNAME must finish in this
REPLY_TIMEOUT = 30.0  # a reply this late means the peer is gone (no command here blocks)
MAX_QUEUED_BYTES = 16 * 1024 * 1024  # unsent bytes: a Redis that stops reading cannot grow us more
MAX_PENDING = 100_000  # commands awaiting replies
BACKOFF_INITIAL = 0.1
BACKOFF_CAP = 5.0
RESOLVE_POLL = 0.02  # while a host name is being looked up, tick() wants to run this often


class LinkDown(Exception):
    """Passed to a callback (as its reply) whose command got no reply: the link went down (or
    was closed) before it came. A command that had already been written may or may not have run.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LinkBusy(LinkDown):
    """Passed to a callback at once when the link refuses a command because too much is already
    waiting (Redis is not reading or not answering): see ``max_queued_bytes`` / ``max_pending``.
    """


class _Phase:
    """Where the connection is: the link is "up" only in ``READY``."""

    IDLE = "idle"  # no socket; the next attempt is at ``_retry_at`` (or never, after close)
    RESOLVING = "resolving"  # the host name is being looked up (in a thread of its own)
    CONNECTING = "connecting"  # TCP connect in progress
    HANDSHAKE = "handshake"  # TLS handshake in progress
    HELLO = "hello"  # AUTH / SELECT / CLIENT SETNAME sent, their replies awaited
    READY = "ready"


class RedisLink:
    """A non-blocking connection to the Redis at ``url``, driven by the selectors loop.

    Wiring: :meth:`attach` to the loop's selector, call :meth:`tick` every round (it connects and
    reconnects; :meth:`deadline` says when it next needs to run), and let the loop call
    :meth:`on_ready` for the key registered with ``data=link``. Not thread-safe.
    """

    def __init__(
        self,
        url: RedisURL,
        *,
        name: str,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        on_state: Callable[[LinkState, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        connect_timeout: float = CONNECT_TIMEOUT,
        reply_timeout: float = REPLY_TIMEOUT,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        max_pending: int = MAX_PENDING,
        subscribe: Sequence[str] = (),
        on_push: PushHandler | None = None,
    ) -> None:
        """``name`` goes to CLIENT SETNAME (Redis's CLIENT LIST shows it) and to log lines.
        ``tls`` is required for ``rediss://`` (see :func:`mtlschat.cluster.url.tls_context`).
        ``on_state("up"|"down", reason)`` is called once per change (also for the first failed
        attempt at startup, so "unreachable" is said at once), never for repeated failures.
        ``subscribe``: Pub/Sub channels to subscribe to on every connection (RESP3: commands
        still work on it); every push Redis sends (their messages, and the confirmations) goes
        to ``on_push``, in order with the replies.
        """
        if url.tls and tls is None:
            raise ValueError("a rediss:// link needs a TLS context")
        self.url = url
        self.name = name
        self._password = password
        self._tls = tls if url.tls else None
        self._on_state = on_state
        self._clock = clock
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.max_queued_bytes = max_queued_bytes
        self.max_pending = max_pending
        self.subscribe = tuple(subscribe)
        self._on_push = on_push
        self._backoff = Backoff(initial=BACKOFF_INITIAL, cap=BACKOFF_CAP)
        self._selector: selectors.BaseSelector | None = None
        self._sock: socket.socket | None = None
        self._events = 0  # what the socket is registered for (0: not registered)
        self._phase = _Phase.IDLE
        self._closed = False
        self._retry_at = 0.0  # connect at the first tick
        self._phase_deadline = 0.0  # connect/handshake/hello must be done by then
        self._lookup: _Lookup | None = None
        self._addresses: _Addresses = []  # the host's other addresses, tried if this one fails
        self._parser = ReplyParser()
        self._out = bytearray()  # written when READY (the hello goes first on a new connection)
        self._sent: collections.deque[tuple[Callback, float]] = collections.deque()  # replies due
        self._held: collections.deque[tuple[bytes, Callback, float]] = collections.deque()
        self._hello = 0  # hello replies still expected
        self._reported: LinkState | None = None
        self.reason = "not connected yet"
        # Counters (for tests and metrics): writes = send() calls that sent bytes.
        self.writes = 0
        self.commands = 0
        self.connects = 0

    # -- the public face ---------------------------------------------------------------------

    @property
    def up(self) -> bool:
        """True once connected, authenticated and selected, until the connection is lost."""
        return self._phase == _Phase.READY

    @property
    def pending(self) -> int:
        """Commands waiting for a reply (written or not)."""
        return len(self._sent) + len(self._held)

    def attach(self, selector: selectors.BaseSelector) -> None:
        """Use ``selector`` (the server's): the socket is registered with ``data=self`` whenever
        there is one, and re-registered by the link itself after a reconnect.
        """
        self._selector = selector
        if self._sock is not None:
            self._register(self._wanted())

    def call(self, args: Sequence[Arg], callback: Callback) -> None:
        """Queue the command ``args``; ``callback(reply)`` gets its reply later, in FIFO order.

        Never blocks and never raises for the link's sake. The reply is a RESP value, a
        :class:`~mtlschat.cluster.resp.ReplyError` (Redis refused the command), or a
        :class:`LinkDown`. Before the first attempt and while the link is connecting, commands
        are held and sent once it is up (or failed with it). While it is down (waiting to retry,
        or closed) the callback gets :class:`LinkDown` AT ONCE, before ``call`` returns; it gets
        :class:`LinkBusy` (a LinkDown) at once if ``max_pending`` commands or
        ``max_queued_bytes`` unsent bytes are already waiting (a Redis that stopped reading).
        """
        if self._phase == _Phase.IDLE and (self._closed or self._reported == "down"):
            callback(LinkDown(self.reason))
            return
        if self.pending >= self.max_pending or len(self._out) >= self.max_queued_bytes:
            callback(LinkBusy(f"redis is not keeping up: {self.pending} commands waiting"))
            return
        now = self._clock()
        data = encode(args)
        self.commands += 1
        if self._phase != _Phase.READY:
            self._held.append((data, callback, now))
            return
        self._out += data  # (written by flush() or the next tick(): one write per round)
        self._sent.append((callback, now))

    def flush(self) -> None:
        """Write what is queued now: call it once per round, after the round's commands are
        queued (else the next :meth:`tick` does it). What the socket cannot take now is written
        when the selector says it is writable.
        """
        if self._out and self._phase == _Phase.READY:
            self._write()

    def stalled(self, now: float) -> float:
        """Seconds the oldest outstanding command has waited for its reply (0.0 if none)."""
        oldest = [q[0][-1] for q in (self._sent, self._held) if q]
        return max(0.0, now - min(oldest)) if oldest else 0.0

    def deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (``clock`` time), or None."""
        if self._closed:
            return None
        if self._phase == _Phase.IDLE:
            return self._retry_at
        if self._phase == _Phase.RESOLVING:
            return min(self._phase_deadline, self._clock() + RESOLVE_POLL)
        if self._phase != _Phase.READY:
            return self._phase_deadline
        if self._out and not self._events & selectors.EVENT_WRITE:
            return self._clock()  # queued and not flushed: the next tick writes it
        if self._sent:
            return self._sent[0][1] + self.reply_timeout
        return None

    def tick(self, now: float) -> None:
        """Connect when a retry is due; give up on a connection attempt or a reply that is late."""
        if self._closed:
            return
        if self._phase == _Phase.IDLE:
            if now >= self._retry_at:
                self._connect(now)
        elif self._phase == _Phase.RESOLVING and self._lookup is not None and self._lookup.done:
            self._open(self._lookup.result)
        elif self._phase != _Phase.READY:
            if now >= self._phase_deadline:
                self._fail(f"no connection within {self.connect_timeout:g} s ({self._phase})")
        elif self._sent and now - self._sent[0][1] >= self.reply_timeout:
            self._fail(f"no reply from redis for {self.reply_timeout:g} s")
        elif self._out and not self._events & selectors.EVENT_WRITE:
            self._write()  # queued since the last round and nobody flushed

    def close(self) -> None:
        """Close for good: outstanding callbacks get :class:`LinkDown`; no more reconnects."""
        self._closed = True
        self._fail("link closed", report=False)

    def on_ready(self, mask: int) -> None:
        """The selector says the socket is ready (``mask``: selectors.EVENT_READ/WRITE)."""
        if self._phase == _Phase.CONNECTING:
            self._connected()
        elif self._phase == _Phase.HANDSHAKE:
            self._handshake()
        else:
            if mask & selectors.EVENT_WRITE and self._out:
                self._write()
            if mask & selectors.EVENT_READ and self._sock is not None:
                self._read()

    # -- connecting --------------------------------------------------------------------------

    def _connect(self, now: float) -> None:
        self.connects += 1
        self._phase_deadline = now + self.connect_timeout
        if self.url.is_ip:  # (getaddrinfo of an address does not ask any resolver)
            self._open(_resolve(self.url.host, self.url.port))
        else:  # a resolver can take seconds: never in the loop
            self._phase = _Phase.RESOLVING
            self._lookup = _Lookup(self.url.host, self.url.port)

    def _open(self, resolved: _Addresses | OSError) -> None:
        self._lookup = None
        if isinstance(resolved, OSError):
            self._fail(f"cannot resolve {self.url.host}: {tls_reason(resolved)}")
            return
        self._addresses = list(resolved)
        self._next_address()

    def _next_address(self) -> None:
        """Connect to the next address of the host (``localhost`` may be ::1, then 127.0.0.1)."""
        family, kind, proto, _, address = self._addresses.pop(0)
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._sock = sock
        self._phase = _Phase.CONNECTING
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            self._connect_failed(code)
            return
        self._register(selectors.EVENT_WRITE)

    def _connect_failed(self, code: int) -> None:
        if not self._addresses:
            self._fail(os.strerror(code))
            return
        self._unregister()
        if self._sock is not None:
            self._sock.close()
        self._next_address()

    def _connected(self) -> None:
        assert self._sock is not None
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._connect_failed(code)
            return
        if self._tls is not None:
            self._unregister()  # the wrapped socket is a new object on the same descriptor
            self._sock = self._tls.wrap_socket(
                self._sock, server_hostname=self.url.host, do_handshake_on_connect=False
            )
            self._phase = _Phase.HANDSHAKE
            self._handshake()
        else:
            self._say_hello()

    def _handshake(self) -> None:
        assert isinstance(self._sock, ssl.SSLSocket)
        try:
            self._sock.do_handshake()
        except ssl.SSLWantReadError:
            self._register(selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            self._register(selectors.EVENT_WRITE)
        except OSError as exc:
            self._fail(f"TLS handshake failed: {_handshake_reason(exc)}")
        else:
            self._say_hello()

    def _say_hello(self) -> None:
        """AUTH, SELECT and CLIENT SETNAME go first on a new connection (HELLO 3 with AUTH and
        SETNAME for a subscribing link), then SUBSCRIBE, then what was held."""
        hello: list[list[Arg]] = []
        # (CLIENT SETNAME refuses spaces and control characters: they would fail every hello)
        shown = "".join(c if "!" <= c <= "~" else "_" for c in self.name)
        if self.subscribe:
            auth: list[Arg] = []
            if self._password is not None:
                auth = ["AUTH", self.url.username or "default", self._password]
            hello.append(["HELLO", 3, *auth, "SETNAME", shown])
        elif self._password is not None:
            user = [self.url.username] if self.url.username else []
            hello.append(["AUTH", *user, self._password])
        if self.url.db:
            hello.append(["SELECT", self.url.db])
        if not self.subscribe:
            hello.append(["CLIENT", "SETNAME", shown])
        self._phase = _Phase.HELLO
        self._hello = len(hello) + len(self.subscribe)  # (one confirmation per channel)
        if self.subscribe:
            hello.append(["SUBSCRIBE", *self.subscribe])
        self._out = bytearray(b"".join(encode(cmd) for cmd in hello))
        self._register(selectors.EVENT_READ | selectors.EVENT_WRITE)
        self._write()

    def _hello_reply(self, reply: Reply) -> None:
        if isinstance(reply, ReplyError):
            self._fail(f"redis refused the connection: {reply}")
            return
        self._hello -= 1
        if self._hello:
            return
        self._phase = _Phase.READY
        self._backoff.reset()
        for data, callback, when in self._held:
            self._out += data
            self._sent.append((callback, when))
        self._held.clear()
        self._report("up", f"connected to {self.url}")
        self._register(self._wanted())
        if self._out:
            self._write()

    # -- moving bytes ------------------------------------------------------------------------

    def _write(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            sent = sock.send(self._out)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0  # (TLS: retried with the same bytes, and more, when the socket is writable)
        except OSError as exc:
            self._fail(f"write failed: {tls_reason(exc)}")
            return
        if sent:
            self.writes += 1
            del self._out[:sent]
        self._register(self._wanted())  # write-ready is asked for only while bytes are left

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        taken = 0
        while taken < READ_BUDGET or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            try:
                data = sock.recv(READ_CHUNK)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as exc:
                self._fail(f"read failed: {tls_reason(exc)}")
                return
            if not data:
                self._fail("redis closed the connection")
                return
            taken += len(data)
            self._parser.feed(data)
            if not self._dispatch() or sock is not self._sock:
                return  # the connection failed while handling the replies

    def _dispatch(self) -> bool:
        """Hand every complete reply to its callback; False if the connection failed meanwhile."""
        sock = self._sock
        try:
            for reply in self._parser.replies():
                if isinstance(reply, Push) and self._phase != _Phase.HELLO:
                    if self._on_push is not None:
                        self._on_push(reply)
                elif self._phase == _Phase.HELLO:  # (a subscription is confirmed by a push)
                    self._hello_reply(reply)
                elif self._sent:
                    callback, _ = self._sent.popleft()
                    callback(reply)
                else:
                    self._fail("redis sent a reply nobody asked for")
                if self._sock is not sock:
                    return False
        except ProtocolError as exc:
            self._fail(f"redis sent bad data: {exc}")
            return False
        return True

    # -- failure -----------------------------------------------------------------------------

    def _fail(self, reason: str, *, report: bool = True) -> None:
        """Drop the connection, fail everything outstanding (FIFO), schedule the next attempt."""
        self._unregister()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._phase = _Phase.IDLE
        self._lookup = None  # (a lookup still running is forgotten; its thread just ends)
        self._parser = ReplyParser()
        self._out = bytearray()
        self.reason = f"{reason} ({self.url})"
        now = self._clock()
        self._retry_at = now + self._backoff.next()
        waiting = [cb for cb, _ in self._sent] + [cb for _, cb, _ in self._held]
        self._sent.clear()
        self._held.clear()
        if report:
            self._report("down", self.reason)
        down = LinkDown(self.reason)
        for callback in waiting:
            callback(down)

    def _report(self, state: LinkState, reason: str) -> None:
        if state == self._reported:
            return
        self._reported = state
        if state == "up":
            log.info("redis link %s: up, %s", self.name, reason)
        else:
            log.warning("redis link %s: down, %s; retrying with backoff", self.name, reason)
        if self._on_state is not None:
            self._on_state(state, reason)

    # -- the selector registration -----------------------------------------------------------

    def _wanted(self) -> int:
        if self._phase == _Phase.CONNECTING:
            return selectors.EVENT_WRITE
        if self._phase == _Phase.HANDSHAKE:
            return selectors.EVENT_READ | selectors.EVENT_WRITE
        return selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)

    def _register(self, events: int) -> None:
        if self._selector is None or self._sock is None or events == self._events:
            return
        if self._events:
            self._selector.modify(self._sock, events, self)
        else:
            self._selector.register(self._sock, events, self)
        self._events = events

    def _unregister(self) -> None:
        if self._selector is not None and self._sock is not None and self._events:
            self._selector.unregister(self._sock)
        self._events = 0


_Addresses = list[tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]]


def _resolve(host: str, port: int) -> _Addresses | OSError:
    try:
        found: _Addresses = list(
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        )
    except OSError as exc:
        return exc
    return found


class _Lookup:
    """``getaddrinfo`` in a daemon thread of its own, polled by :meth:`RedisLink.tick`: the
    system resolver blocks (for seconds when DNS is slow) and the loop must not.
    """

    def __init__(self, host: str, port: int) -> None:
        self.result: _Addresses | OSError = OSError("not resolved yet")
        self._done = threading.Event()
        threading.Thread(
            target=self._run, args=(host, port), name=f"resolve {host}", daemon=True
        ).start()

    def _run(self, host: str, port: int) -> None:
        self.result = _resolve(host, port)
        self._done.set()

    @property
    def done(self) -> bool:
        """True once ``result`` holds the addresses or the error."""
        return self._done.is_set()


def _handshake_reason(exc: OSError) -> str:
    """Why the handshake failed, with OpenSSL's verify message when that was the cause."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"{tls_reason(exc)}: {exc.verify_message}"
    return tls_reason(exc)
