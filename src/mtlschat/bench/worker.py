"""Load-generator processes: receiver workers and senders.

A receiver worker is one ``selectors`` loop over many non-blocking TLS sockets (each with its own
client certificate). It reads in large chunks and verifies streams with
:class:`~mtlschat.bench.payload.StreamChecker`. It talks to the orchestrator over a
``multiprocessing`` pipe with small tuples:

* worker -> main: ``("prepared",)`` (TLS contexts built), ``("connected", stats)``,
  ``("progress", up, received)``, ``("done", last_us)``, ``("result", stats)``
* main -> worker: ``("start",)`` (connect now), ``("report",)``, ``("close",)``

The ``storm`` workload adds: main -> worker ``("storm",)`` (from now on a receiver the server
drops reconnects as the real client does, after its backoff with jitter; the worker answers
``("storming",)``), then ``("restarted",)`` once the new server listens; worker -> main
``("back", StormReport)`` when every receiver is in again.

A sender is a process with one blocking TLS socket: it connects, says ``("ready",)``, waits for
``("go",)``, sends its share of messages (a burst as fast as the server takes them, or paced), then
reports ``("sent", stats)`` and waits for ``("close",)``.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import selectors
import signal
import socket
import ssl
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from mtlschat.backoff import Backoff
from mtlschat.bench.payload import StreamChecker, encode_batch, now_us
from mtlschat.client.tls import client_context as mtlschat_client_context
from mtlschat.fdlimit import raise_fd_limit

_RECV = 256 * 1024
# TLS plaintext records are at most 16 KiB: asking SSL for more only makes CPython allocate (and
# shrink) a bigger bytes object on every call.
_RECORD = 16 * 1024
_PROGRESS_EVERY = 0.2
# Linux: bind() to an address without reserving a port; connect() picks one for the 4-tuple, so
# one source address can use the whole ephemeral range towards each server.
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_MAX_ERRORS = 5


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: address, CA and the TLS server name to verify."""

    host: str
    port: int
    ca_file: str
    server_name: str


@dataclass(frozen=True)
class ReceiverJob:
    """One worker's share of receivers."""

    endpoint: Endpoint
    certs: list[str]  # one PEM (certificate + key) per receiver
    senders: int
    per_sender: int  # messages each sender will send
    concurrency: int  # handshakes in flight at once
    fast_verify: bool
    sources: tuple[str, ...] = ()  # local addresses to connect from, round robin; () = any
    # A storm's probe: connects after the restart, retrying with the client's backoff, and
    # picks the stream up wherever it is; says ``("back", ...)`` when in, never "connected".
    storm: bool = False


BATCH = 256  # messages per sender write by default


@dataclass(frozen=True)
class SenderJob:
    """One sender: its index (embedded in each message) and what to send."""

    endpoint: Endpoint
    cert: str
    index: int
    messages: int
    size: int
    rate: float  # messages/s for this sender; 0 = as fast as the server accepts
    batch: int = BATCH  # messages per write (one sendall; up to 16 KiB per TLS record)
    # storm: wait for ``("connect",)`` before connecting, and keep trying (with the client's
    # backoff) for this long while the restarted server is busy with everyone else.
    retry_for: float = 0.0


def client_context(ep: Endpoint, cert: str) -> ssl.SSLContext:
    """The client's context presenting ``cert``, verifying the server against the bench CA; no
    ALPN, so the server speaks its text mode (what the stream checker parses).
    """
    return mtlschat_client_context(Path(cert), None, Path(ep.ca_file), alpn=None)


@dataclass
class _Conn:
    """One receiver. TLS runs over memory BIOs: one ``recv`` syscall takes every record the
    kernel holds (an ``SSLSocket`` without read-ahead costs two syscalls per record)."""

    index: int
    ctx: ssl.SSLContext
    sock: socket.socket | None = None
    tls: ssl.SSLObject | None = None
    inc: ssl.MemoryBIO = field(default_factory=ssl.MemoryBIO)
    out: ssl.MemoryBIO = field(default_factory=ssl.MemoryBIO)
    unsent: bytes = b""
    up: bool = False
    closed: bool = False
    checker: StreamChecker | None = None
    backoff: Backoff | None = None  # storm: the real client's reconnect delays

    def reset(self) -> None:
        """Forget the connection (storm: before reconnecting); keep the context."""
        self.sock = None
        self.tls = None
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.unsent = b""
        self.up = False
        self.closed = False

    def flush(self) -> None:
        """Send what TLS produced (handshake messages, alerts); keep what the socket refused."""
        assert self.sock is not None
        if self.out.pending:
            self.unsent += self.out.read()
        if self.unsent:
            try:
                n = self.sock.send(self.unsent)
            except (BlockingIOError, InterruptedError):
                return
            self.unsent = self.unsent[n:]


@dataclass(frozen=True)
class ConnectedReport:
    """A worker's ``("connected", ...)``: its receivers are all in (or have failed)."""

    connected: int
    failed: int
    t_start_us: int
    t_connected_us: int
    errors: list[str]
    cpu_s: float  # the worker's CPU time spent connecting
    sources: list[str] = field(default_factory=list)  # local addresses the connections came from


@dataclass(frozen=True)
class StormReport:
    """A worker's ``("back", ...)``: every receiver is in again after the restart."""

    back: int  # receivers connected again
    attempts: int  # reconnect attempts (a refused or evicted one is retried after a backoff)
    failed_attempts: int
    t_back_us: int  # when the last one was back
    samples_during: int  # latency samples taken before that (lines to members already back)
    errors: list[str]


@dataclass(frozen=True)
class ReceiverReport:
    """A worker's ``("result", ...)``: what its receivers got."""

    connected: int
    failed: int
    dropped: int
    received: int
    lost: int
    gaps: int
    out_of_order: int
    other_lines: int
    reads: int
    last_us: int
    expected: int  # messages the receivers should have got (storm: from when each was back)
    errors: list[str]
    latencies: bytes  # array("q") of microseconds, as bytes (cheap to pickle)
    cpu_s: float


@dataclass(frozen=True)
class SenderReport:
    """A sender's ``("sent", ...)``."""

    sent: int
    t_first_us: int
    t_last_us: int
    error: str | None
    cpu_s: float


def run_receivers(job: ReceiverJob, pipe: Connection) -> None:
    """Process entry point: connect every receiver, verify streams, obey the orchestrator."""
    _leave_ctrl_c_to_the_parent()
    raise_fd_limit()
    latencies: array[int] = array("q")
    conns = [_Conn(i, client_context(job.endpoint, c)) for i, c in enumerate(job.certs)]
    for c in conns:
        c.checker = StreamChecker(job.senders, job.fast_verify, latencies, resume=job.storm)
    pipe.send(("prepared",))
    if pipe.recv()[0] != "start":
        return
    loop = _ReceiverLoop(job, conns, latencies)
    loop.run(pipe)
    loop.close()
    pipe.send(("closed",))


class _ReceiverLoop:
    """One ``selectors`` loop over every receiver of a worker: connect ``concurrency`` at a
    time, then read, decrypt and check streams until the orchestrator says ``close``.
    """

    def __init__(self, job: ReceiverJob, conns: list[_Conn], latencies: array[int]) -> None:
        self.job = job
        self.conns = conns
        self.latencies = latencies
        self.addr = (job.endpoint.host, job.endpoint.port)
        self.family = socket.AF_INET6 if ":" in job.endpoint.host else socket.AF_INET
        self.sel = selectors.DefaultSelector()
        self.rbuf = bytearray(_RECV)  # one reused buffer: a new 256 KiB bytes is an mmap
        self.rview = memoryview(self.rbuf)
        self.todo = deque(conns)
        self.total = job.senders * job.per_sender  # messages each receiver must get
        self.t_start_us = now_us()
        self.cpu_start = time.process_time()
        self.t_connected_us = 0
        self.in_flight = 0  # handshakes under way
        self.pending = len(conns)  # receivers neither connected nor failed yet
        self.connected = 0
        self.failed = 0
        self.dropped = 0
        self.received = 0
        self.errors: list[str] = []
        self.sources: set[str] = set()  # local addresses actually used (getsockname)
        # storm: receivers the server dropped reconnect after their backoff
        self.storm = self.restarted = job.storm
        # storm: the receivers that must come back (those in when it began; a probe: all)
        self.members = list(conns) if job.storm else []
        self.down = len(conns) if job.storm else 0  # receivers not connected (storm)
        self.retry: list[tuple[float, int]] = []  # (due, index): a heap of reconnects
        self.attempts = 0
        self.failed_attempts = 0
        self.t_back_us = 0

    def run(self, pipe: Connection) -> None:
        """Serve the sockets and the orchestrator's pipe until it says ``close``."""
        reported_connected = False
        reported_back = False
        all_delivered = self.total == 0
        last_progress = 0.0
        self.start_next()
        while True:
            self.step()
            if not reported_connected and self.pending == 0:
                reported_connected = True
                pipe.send(("connected", self.connected_report()))
            if self.restarted and not reported_back and self.down == 0 and self.all_up():
                reported_back = True
                pipe.send(("back", self.storm_report()))
            if not all_delivered and reported_connected and self.all_delivered():
                all_delivered = True
                pipe.send(("done", self.last_us()))
            now = time.monotonic()
            if now - last_progress >= _PROGRESS_EVERY:
                last_progress = now
                pipe.send(("progress", self.connected - self.down, self.received))
            if pipe.poll():
                cmd = pipe.recv()[0]
                if cmd == "storm":
                    self.storm = True
                    self.members = [c for c in self.conns if c.up and not c.closed]
                    pipe.send(("storming",))
                elif cmd == "restarted":
                    self.restarted = True
                elif cmd == "report":
                    pipe.send(("result", self.result()))
                elif cmd == "close":
                    return

    def step(self) -> None:
        """One wait on the sockets; then start handshakes if there is room."""
        events = self.sel.select(0.05)
        t_us = now_us()
        for key, _mask in events:
            c = key.data
            if c.up:
                self.received += self.read(c, t_us)
            elif not c.closed:
                self.received += self.handshake(c, t_us)
        if self.retry:
            now = time.monotonic()
            while self.retry and self.retry[0][0] <= now:
                self.todo.append(self.conns[heapq.heappop(self.retry)[1]])
        if self.todo and (self.storm or self.in_flight < self.job.concurrency):
            self.start_next()

    def error(self, msg: str) -> None:
        """Keep the first few errors for the report."""
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(msg)

    def start_next(self) -> None:
        """Open connections until ``concurrency`` handshakes are under way."""
        # A storm has no cap: every member's client reconnects on its own timer.
        while self.todo and (self.storm or self.in_flight < self.job.concurrency):
            c = self.todo.popleft()
            if self.storm:
                self.attempts += 1
            s = socket.socket(self.family, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if sources := self.job.sources:
                s.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                try:
                    s.bind((sources[c.index % len(sources)], 0))
                except OSError as e:
                    c.sock = s
                    self.in_flight += 1
                    self.finish(c, f"bind: {e.strerror or e}")
                    continue
            err = s.connect_ex(self.addr)
            c.sock = s
            self.in_flight += 1
            if err not in (0, errno.EINPROGRESS):
                self.finish(c, errno.errorcode.get(err, str(err)))
                continue
            self.sel.register(s.fileno(), selectors.EVENT_WRITE, c)

    def finish(self, c: _Conn, failed: str | None) -> None:
        """Close ``c``; ``failed`` says why if it was not a clean end."""
        if c.sock is not None:
            with contextlib.suppress(KeyError, ValueError):  # failed before registration
                self.sel.unregister(c.sock.fileno())
            c.sock.close()
        c.closed = True
        if self.storm and failed is not None:
            self.reconnect_later(c)
            return
        if failed is not None:
            if c.up:
                self.dropped += 1
                self.error(f"receiver {c.index} dropped: {failed}")
            else:
                self.in_flight -= 1
                self.failed += 1
                self.error(f"receiver {c.index}: {failed}")
        if not c.up:
            self.pending -= 1

    def handshake(self, c: _Conn, t_us: int) -> int:
        """Advance ``c``'s connect or TLS handshake; the messages already decrypted, if any."""
        sock = c.sock
        assert sock is not None
        if c.tls is None:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.finish(c, errno.errorcode.get(err, str(err)))
                return 0
            c.tls = c.ctx.wrap_bio(c.inc, c.out, server_hostname=self.job.endpoint.server_name)
            self.sources.add(sock.getsockname()[0])
        else:
            try:
                raw = sock.recv(_RECV)
            except (BlockingIOError, InterruptedError):
                raw = None
            except OSError as e:
                self.finish(c, e.strerror or str(e))
                return 0
            if raw == b"":
                self.finish(c, "closed by server during the handshake")
                return 0
            if raw:
                c.inc.write(raw)
        try:
            c.tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLError as e:
            with contextlib.suppress(OSError):
                c.flush()  # the alert tells the server why
            self.finish(c, str(e))
            return 0
        try:
            c.flush()
        except OSError as e:
            self.finish(c, e.strerror or str(e))
            return 0
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.unsent else 0)
        self.sel.modify(sock.fileno(), events, c)
        if not done:
            return 0
        c.up = True
        self.in_flight -= 1
        if self.storm:
            self.down -= 1
            self.t_back_us = now_us()
            if c.backoff is not None:
                c.backoff.reset()
        else:
            self.pending -= 1
            self.connected += 1
            self.t_connected_us = now_us()
        return self.decrypt(c, t_us, None) if c.inc.pending else 0

    def read(self, c: _Conn, t_us: int) -> int:
        """Read what the socket holds into ``c``'s TLS; the messages it carried."""
        sock = c.sock
        assert sock is not None
        if c.unsent:
            with contextlib.suppress(OSError):
                c.flush()
            if not c.unsent:
                self.sel.modify(sock.fileno(), selectors.EVENT_READ, c)
        try:
            size = sock.recv_into(self.rbuf)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            return self.decrypt(c, t_us, e.strerror or str(e))
        if not size:
            return self.decrypt(c, t_us, "closed by server")
        c.inc.write(self.rview[:size])
        return self.decrypt(c, t_us, None)

    def decrypt(self, c: _Conn, t_us: int, gone: str | None) -> int:
        """Decrypt everything buffered for ``c`` and check it; close it if ``gone``."""
        tls, chk = c.tls, c.checker
        assert tls is not None and chk is not None
        chunks: list[bytes] = []
        inc = c.inc
        try:
            while True:
                d = tls.read(_RECORD)
                if not d:
                    gone = gone or "closed by server"
                    break
                chunks.append(d)
                # Nothing left in the BIO or in OpenSSL: stop here rather than let the next read
                # raise SSLWantReadError (an exception per wake-up is a visible cost in profiles).
                if not inc.pending and not tls.pending():
                    break
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            gone = "closed by server (close_notify)"
        except ssl.SSLError as e:
            gone = str(e)
        n = 0
        if chunks:
            n = chk.feed(chunks[0] if len(chunks) == 1 else b"".join(chunks), t_us)
            if chk.need_pong:
                chk.need_pong = False
                with contextlib.suppress(ssl.SSLError):
                    tls.write(b"/pong\n")
        if c.out.pending:
            with contextlib.suppress(OSError):
                c.flush()
        if gone is not None:
            self.finish(c, gone)
        return n

    def reconnect_later(self, c: _Conn) -> None:
        """Storm: ``c`` lost its connection (or failed to get one): try again after the real
        client's backoff, with a fresh checker that picks the stream up wherever it is then."""
        if c.up:
            self.down += 1
        else:
            self.in_flight -= 1
            self.failed_attempts += 1
        c.reset()
        c.checker = StreamChecker(self.job.senders, False, self.latencies, resume=True)
        if c.backoff is None:
            c.backoff = Backoff()
        heapq.heappush(self.retry, (time.monotonic() + c.backoff.next(), c.index))

    def all_up(self) -> bool:
        """Storm: every receiver that was in when it began is connected again."""
        return all(c.up and not c.closed for c in self.members)

    def storm_report(self) -> StormReport:
        """What ``("back", ...)`` carries."""
        return StormReport(
            back=sum(c.up and not c.closed for c in self.members),
            attempts=self.attempts,
            failed_attempts=self.failed_attempts,
            t_back_us=self.t_back_us,
            samples_during=len(self.latencies),
            errors=list(self.errors),
        )

    def live_checkers(self) -> list[StreamChecker]:
        """The checkers of the receivers still connected."""
        return [c.checker for c in self.conns if c.up and not c.closed and c.checker]

    def all_delivered(self) -> bool:
        """Every live receiver has every message (a dropped one must not stall the run)."""
        live = self.connected - self.dropped
        if self.storm:  # (some came back late: they expect less than the whole stream)
            return self.restarted and self.all_up() and self.live_checkers_done()
        if self.received < self.total * live:
            return False
        return self.live_checkers_done()

    def live_checkers_done(self) -> bool:
        """Every live receiver has seen each sender's last message."""
        return all(ch.done(self.job.per_sender) for ch in self.live_checkers())

    def last_us(self) -> int:
        """When the last message arrived at a live receiver."""
        return max((ch.last_us for ch in self.live_checkers()), default=0)

    def connected_report(self) -> ConnectedReport:
        """What ``("connected", ...)`` carries."""
        return ConnectedReport(
            connected=self.connected,
            failed=self.failed,
            t_start_us=self.t_start_us,
            t_connected_us=self.t_connected_us,
            errors=list(self.errors),
            cpu_s=time.process_time() - self.cpu_start,
            sources=sorted(self.sources),
        )

    def result(self) -> ReceiverReport:
        """What ``("result", ...)`` carries."""
        checkers = [c.checker for c in self.conns if c.up and c.checker is not None]
        received = sum(ch.received for ch in checkers)
        expected = sum(ch.expected_lines(self.job.per_sender) for ch in checkers)
        return ReceiverReport(
            connected=self.connected,
            failed=self.failed,
            dropped=self.dropped,
            received=received,
            lost=expected - received,
            gaps=sum(ch.gaps for ch in checkers),
            out_of_order=sum(ch.disorder for ch in checkers),
            other_lines=sum(ch.other for ch in checkers),
            reads=sum(ch.reads for ch in checkers),
            last_us=max((ch.last_us for ch in checkers), default=0),
            expected=expected,
            errors=list(self.errors),
            latencies=self.latencies.tobytes(),
            cpu_s=time.process_time(),
        )

    def close(self) -> None:
        """Say close_notify on every live connection, so the server logs a clean close."""
        for c in self.conns:
            if c.up and c.tls is not None and c.sock is not None and not c.closed:
                with contextlib.suppress(OSError, ssl.SSLError):
                    c.tls.unwrap()
                with contextlib.suppress(OSError):
                    c.flush()
                c.sock.close()
        self.sel.close()


def _leave_ctrl_c_to_the_parent() -> None:
    # Ctrl-C reaches the whole process group: the orchestrator stops the run (and cleans up its
    # certificates), then closes us; a traceback from each worker would only bury its message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_sender(job: SenderJob, pipe: Connection) -> None:
    """Process entry point for one sender."""
    _leave_ctrl_c_to_the_parent()
    ep = job.endpoint
    ctx = client_context(ep, job.cert)
    if job.retry_for:
        pipe.send(("started",))
        if pipe.recv()[0] != "connect":
            return
    backoff = Backoff()
    give_up = time.monotonic() + job.retry_for
    while True:
        try:
            raw = socket.create_connection((ep.host, ep.port), timeout=30)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # paced lines go at once
            tls = ctx.wrap_socket(raw, server_hostname=ep.server_name)
            break
        except (OSError, ssl.SSLError) as e:
            if time.monotonic() >= give_up:
                pipe.send(("failed", str(e)))
                return
            time.sleep(backoff.next())  # (a storm: the server is busy with everyone else)
    tls.settimeout(None)
    pipe.send(("ready",))
    if pipe.recv()[0] != "go":
        tls.close()
        return
    t_first = now_us()
    seq = 0
    try:
        if job.rate <= 0:
            while seq < job.messages:
                k = min(job.batch, job.messages - seq)
                tls.sendall(encode_batch(job.index, seq, k, now_us(), job.size))
                seq += k
                _drain(tls)
        else:
            start = time.monotonic()
            interval = 1.0 / job.rate
            while seq < job.messages:
                due = min(job.messages, int((time.monotonic() - start) / interval) + 1)
                if due > seq:
                    tls.sendall(encode_batch(job.index, seq, due - seq, now_us(), job.size))
                    seq = due
                    _drain(tls)
                else:
                    time.sleep(max(0.0, start + seq * interval - time.monotonic()))
    except (OSError, ssl.SSLError) as e:
        error: str | None = str(e)
    else:
        error = None
    report = SenderReport(seq, t_first, now_us(), error, cpu_s=time.process_time())
    pipe.send(("sent", report))
    while pipe.recv()[0] != "close":
        pass
    _drain(tls)
    tls.close()


def _drain(tls: ssl.SSLSocket) -> None:
    """Read and discard whatever the server sent us (welcome, other senders' lines)."""
    tls.setblocking(False)
    try:
        while tls.recv(_RECORD):
            pass
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        pass
    except (OSError, ssl.SSLError):
        pass
    finally:
        tls.setblocking(True)
