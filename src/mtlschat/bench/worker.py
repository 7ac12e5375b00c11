"""Load-generator processes: receiver workers and senders.

A receiver worker is one ``selectors`` loop over many non-blocking TLS sockets (each with its own
client certificate). It reads in large chunks and verifies streams with
:class:`~mtlschat.bench.payload.StreamChecker`. It talks to the orchestrator over a
``multiprocessing`` pipe with small tuples:

* worker -> main: ``("prepared",)`` (TLS contexts built), ``("connected", stats)``,
  ``("progress", connected, received)``, ``("done", last_us)``, ``("result", stats)``
* main -> worker: ``("start",)`` (connect now), ``("report",)``, ``("close",)``

A sender is a process with one blocking TLS socket: it connects, says ``("ready",)``, waits for
``("go",)``, sends its share of messages (a burst as fast as the server takes them, or paced), then
reports ``("sent", stats)`` and waits for ``("close",)``.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import ssl
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mtlschat.bench.payload import StreamChecker, encode_batch, now_us
from mtlschat.client.tls import client_context as mtlschat_client_context
from mtlschat.fdlimit import raise_fd_limit

_RECV = 256 * 1024
# TLS plaintext records are at most 16 KiB: asking SSL for more only makes CPython allocate (and
# shrink) a bigger bytes object on every call.
_RECORD = 16 * 1024
_PROGRESS_EVERY = 0.2
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


@dataclass(frozen=True)
class SenderJob:
    """One sender: its index (embedded in each message) and what to send."""

    endpoint: Endpoint
    cert: str
    index: int
    messages: int
    size: int
    rate: float  # messages/s for this sender; 0 = as fast as the server accepts
    batch: int = 256


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


@dataclass
class _Stats:
    connected: int = 0
    failed: int = 0
    dropped: int = 0
    t_start_us: int = 0
    t_connected_us: int = 0
    cpu_start: float = 0.0
    errors: list[str] = field(default_factory=list)

    def error(self, msg: str) -> None:
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(msg)


def run_receivers(job: ReceiverJob, pipe: Connection) -> None:
    """Process entry point: connect every receiver, verify streams, obey the orchestrator."""
    raise_fd_limit()
    ep = job.endpoint
    addr = (ep.host, ep.port)
    family = socket.AF_INET6 if ":" in ep.host else socket.AF_INET
    latencies: array[int] = array("q")
    conns = [_Conn(i, client_context(ep, c)) for i, c in enumerate(job.certs)]
    for c in conns:
        c.checker = StreamChecker(job.senders, job.fast_verify, latencies)
    pipe.send(("prepared",))
    if pipe.recv()[0] != "start":
        return
    sel = selectors.DefaultSelector()
    rbuf = bytearray(_RECV)
    rview = memoryview(rbuf)
    todo = deque(conns)
    stats = _Stats(t_start_us=now_us(), cpu_start=time.process_time())
    in_flight = 0
    total = job.senders * job.per_sender
    received = 0
    pending_done = len(conns)
    reported_connected = False
    sent_done = total == 0
    last_progress = 0.0

    def finish(c: _Conn, failed: str | None) -> None:
        nonlocal in_flight, pending_done
        if c.sock is not None:
            with contextlib.suppress(KeyError, ValueError):  # failed before registration
                sel.unregister(c.sock.fileno())
            c.sock.close()
        c.closed = True
        if failed is not None:
            if c.up:
                stats.dropped += 1
                stats.error(f"receiver {c.index} dropped: {failed}")
            else:
                in_flight -= 1
                stats.failed += 1
                stats.error(f"receiver {c.index}: {failed}")
        if not c.up:
            pending_done -= 1

    def start_next() -> None:
        nonlocal in_flight
        while todo and in_flight < job.concurrency:
            c = todo.popleft()
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = s.connect_ex(addr)
            c.sock = s
            in_flight += 1
            if err not in (0, errno.EINPROGRESS):
                finish(c, errno.errorcode.get(err, str(err)))
                continue
            sel.register(s.fileno(), selectors.EVENT_WRITE, c)

    def handshake(c: _Conn, t_us: int) -> int:
        nonlocal in_flight, pending_done
        sock = c.sock
        assert sock is not None
        if c.tls is None:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                finish(c, errno.errorcode.get(err, str(err)))
                return 0
            c.tls = c.ctx.wrap_bio(c.inc, c.out, server_hostname=ep.server_name)
        else:
            try:
                raw = sock.recv(_RECV)
            except (BlockingIOError, InterruptedError):
                raw = None
            except OSError as e:
                finish(c, e.strerror or str(e))
                return 0
            if raw == b"":
                finish(c, "closed by server during the handshake")
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
            finish(c, str(e))
            return 0
        try:
            c.flush()
        except OSError as e:
            finish(c, e.strerror or str(e))
            return 0
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.unsent else 0)
        sel.modify(sock.fileno(), events, c)
        if not done:
            return 0
        c.up = True
        in_flight -= 1
        pending_done -= 1
        stats.connected += 1
        stats.t_connected_us = now_us()
        return decrypt(c, t_us, None) if c.inc.pending else 0

    def read(c: _Conn, t_us: int) -> int:
        sock = c.sock
        assert sock is not None
        if c.unsent:
            with contextlib.suppress(OSError):
                c.flush()
            if not c.unsent:
                sel.modify(sock.fileno(), selectors.EVENT_READ, c)
        try:
            # Into one reused buffer: a 256 KiB bytes object per call would be an mmap/munmap.
            size = sock.recv_into(rbuf)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            return decrypt(c, t_us, e.strerror or str(e))
        if not size:
            return decrypt(c, t_us, "closed by server")
        c.inc.write(rview[:size])
        return decrypt(c, t_us, None)

    def decrypt(c: _Conn, t_us: int, gone: str | None) -> int:
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
            finish(c, gone)
        return n

    start_next()
    while True:
        events = sel.select(0.05)
        t_us = now_us()
        for key, _mask in events:
            c = key.data
            if c.up:
                received += read(c, t_us)
            elif not c.closed:
                received += handshake(c, t_us)
        if todo and in_flight < job.concurrency:
            start_next()
        if not reported_connected and pending_done == 0:
            reported_connected = True
            pipe.send(("connected", _connected_stats(stats)))
        live = stats.connected - stats.dropped  # a dropped receiver must not stall the run
        if not sent_done and reported_connected and received >= total * live:
            checkers = [c.checker for c in conns if c.up and not c.closed and c.checker]
            if all(ch.done(job.per_sender) for ch in checkers):
                sent_done = True
                pipe.send(("done", max((ch.last_us for ch in checkers), default=0)))
        now = time.monotonic()
        if now - last_progress >= _PROGRESS_EVERY:
            last_progress = now
            pipe.send(("progress", stats.connected, received))
        if pipe.poll():
            cmd = pipe.recv()[0]
            if cmd == "report":
                pipe.send(("result", _result(conns, stats, total, latencies)))
            elif cmd == "close":
                break
    for c in conns:
        if c.up and c.tls is not None and c.sock is not None and not c.closed:
            with contextlib.suppress(OSError, ssl.SSLError):
                c.tls.unwrap()  # close_notify, so the server logs a clean close
            with contextlib.suppress(OSError):
                c.flush()
            c.sock.close()
    pipe.send(("closed",))


def _connected_stats(stats: _Stats) -> dict[str, Any]:
    return {
        "connected": stats.connected,
        "failed": stats.failed,
        "t_start_us": stats.t_start_us,
        "t_connected_us": stats.t_connected_us,
        "errors": list(stats.errors),
        "cpu_s": time.process_time() - stats.cpu_start,
    }


def _result(conns: list[_Conn], stats: _Stats, total: int, latencies: array[int]) -> dict[str, Any]:
    checkers = [c.checker for c in conns if c.up and c.checker is not None]
    received = sum(ch.received for ch in checkers)
    return {
        "connected": stats.connected,
        "failed": stats.failed,
        "dropped": stats.dropped,
        "received": received,
        "lost": total * len(checkers) - received,
        "gaps": sum(ch.gaps for ch in checkers),
        "out_of_order": sum(ch.disorder for ch in checkers),
        "other_lines": sum(ch.other for ch in checkers),
        "reads": sum(ch.reads for ch in checkers),
        "last_us": max((ch.last_us for ch in checkers), default=0),
        "errors": list(stats.errors),
        "latencies": latencies.tobytes(),
        "cpu_s": time.process_time(),
    }


def run_sender(job: SenderJob, pipe: Connection) -> None:
    """Process entry point for one sender."""
    ep = job.endpoint
    ctx = client_context(ep, job.cert)
    try:
        raw = socket.create_connection((ep.host, ep.port), timeout=30)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # paced lines leave at once
        tls = ctx.wrap_socket(raw, server_hostname=ep.server_name)
    except (OSError, ssl.SSLError) as e:
        pipe.send(("failed", str(e)))
        return
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
    stats = {"sent": seq, "t_first_us": t_first, "t_last_us": now_us(), "error": error}
    pipe.send(("sent", {**stats, "cpu_s": time.process_time()}))
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
