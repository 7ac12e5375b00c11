"""Real-TLS fixtures for the server: an in-process server on a thread, a real server process,
and a small blocking test client that speaks JSON lines with deadlines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mtlschat.chat.wire import ALPN_JSON
from mtlschat.client.tls import client_context as mtlschat_client_context
from mtlschat.net.config import ServerConfig
from mtlschat.net.server import ChatServer

if TYPE_CHECKING:  # conftest modules are not importable at run time (--import-mode=importlib)
    from conftest import ServerSpawner, TestPKI

DEADLINE = 15.0  # generous: two shared cores, other test suites running at the same time

Message = dict[str, Any]


def client_context(
    bundle: Path | None,
    ca: Path,
    alpn: str | None = ALPN_JSON,
    *,
    maximum_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """The client's own context (:func:`mtlschat.client.tls.client_context`) trusting ``ca`` and
    presenting ``bundle`` if given; ``maximum_version`` caps it to offer an old TLS version.
    """
    ctx = mtlschat_client_context(bundle, None, ca, alpn=alpn)
    if maximum_version is not None:
        with warnings.catch_warnings():  # the point is to offer the deprecated versions
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            ctx.maximum_version = maximum_version
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 hides TLS < 1.2 at level >= 1
    return ctx


class Closed(Exception):
    """The server closed the connection (EOF, TLS alert or reset)."""


class ChatClient:
    """A blocking mTLS client: send lines, read server lines (JSON or text) with deadlines."""

    __test__ = False

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        host: str = "127.0.0.1",
        *,
        suppress_ragged_eofs: bool = True,
    ) -> None:
        raw = socket.create_connection((host, port), timeout=DEADLINE)
        try:
            self.sock = context.wrap_socket(
                raw, server_hostname="localhost", suppress_ragged_eofs=suppress_ragged_eofs
            )
        except BaseException:
            raw.close()
            raise
        self.buf = b""
        self.seen: list[Message] = []  # every JSON message read, in order

    def send(self, line: str) -> None:
        """Send one line (the terminator is added)."""
        self.sock.sendall(line.encode() + b"\n")

    def read_line(self, timeout: float = DEADLINE) -> bytes:
        """The next line (without ``\\n``); raise :class:`Closed` at EOF, TimeoutError if none."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line within {timeout}s (have {self.buf[:200]!r})")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLError, ConnectionError) as exc:
                raise Closed(str(exc)) from exc
            except TimeoutError:
                continue
            if not data:
                raise Closed("EOF")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def read(self, timeout: float = DEADLINE) -> Message:
        """The next JSON message."""
        msg: Message = json.loads(self.read_line(timeout))
        self.seen.append(msg)
        return msg

    def wait_for(self, type_: str, timeout: float = DEADLINE, **fields: object) -> Message:
        """Read until a message of ``type_`` whose fields equal ``fields``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.read(max(0.0, deadline - time.monotonic()))
            if msg.get("type") == type_ and all(msg.get(k) == v for k, v in fields.items()):
                return msg

    def wait_closed(self, timeout: float = DEADLINE) -> list[Message]:
        """Read until the server closes the connection; return the messages read meanwhile."""
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        try:
            while True:
                line = self.read_line(max(0.0, deadline - time.monotonic()))
                self.seen.append(json.loads(line))
        except Closed:
            return self.seen[start:]

    def close(self) -> None:
        """Close without ceremony."""
        self.sock.close()


def stalled_client(port: int, context: ssl.SSLContext) -> ChatClient:
    """A member who reads the welcome, then never reads again (a 4 KiB receive window, so
    the server's writes to it block soon)."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(DEADLINE)
    raw.connect(("127.0.0.1", port))
    client = ChatClient.__new__(ChatClient)
    client.sock = context.wrap_socket(raw, server_hostname="localhost")
    client.buf, client.seen = b"", []
    client.wait_for("welcome")
    return client


class BioClient:
    """A TLS client driven through memory BIOs, so a test controls every byte on the wire."""

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.buf = b""

    def __enter__(self) -> BioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()

    def start(self) -> bytes:
        """The ClientHello bytes (not sent)."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        return self.outgoing.read()

    def finish(self) -> None:
        """Complete the handshake over the socket."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if pending := self.outgoing.read():
                    self.raw.sendall(pending)
                self.receive()
        self.raw.sendall(self.outgoing.read())

    def receive(self) -> None:
        """Move one socket read into the TLS object; raise :class:`Closed` at EOF."""
        data = self.raw.recv(65536)
        if not data:
            raise Closed("EOF")
        self.incoming.write(data)

    def encrypt(self, text: str) -> bytes:
        """The TLS record(s) carrying ``text`` (not sent)."""
        self.tls.write(text.encode())
        return self.outgoing.read()

    def read_line(self) -> bytes:
        """The next decrypted line."""
        while b"\n" not in self.buf:
            try:
                self.buf += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self.receive()
        line, _, self.buf = self.buf.partition(b"\n")
        return line


def connect_as(
    port: int, pki: TestPKI, name: str, alpn: str | None = ALPN_JSON, **kw: bool
) -> ChatClient:
    """Connect to the server on ``port`` as ``pki``'s user ``name`` (TLS done, nothing read)."""
    return ChatClient(port, client_context(pki.user(name), pki.ca_cert, alpn), **kw)


def join_as(port: int, pki: TestPKI, name: str, **kw: bool) -> ChatClient:
    """:func:`connect_as` in JSON mode, then read up to this client's welcome."""
    client = connect_as(port, pki, name, **kw)
    client.wait_for("welcome", name=name)
    return client


def assert_refused(port: int, ctx: ssl.SSLContext) -> int:
    """Connect with ``ctx``; assert the server never admits us. Return our local port."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    local_port: int = raw.getsockname()[1]
    try:
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
    except (ssl.SSLError, ConnectionError):
        raw.close()
        return local_port  # refused during the handshake
    client = ChatClient.__new__(ChatClient)
    client.sock, client.buf, client.seen = tls, b"", []
    # TLS 1.3: the client finishes first; the server's verdict on our certificate arrives as an
    # alert on the first read. Either way we must never see a welcome.
    with pytest.raises(Closed):
        client.read_line()
    tls.close()
    return local_port


class LogCapture(logging.Handler):
    """Collects the server's log lines from one thread and lets tests wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.thread_name: str | None = None
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        if self.thread_name is not None and record.threadName != self.thread_name:
            return
        with self._cond:
            self.lines.append(record.getMessage())
            self._cond.notify_all()

    def wait(self, pattern: str, timeout: float = DEADLINE) -> str:
        """The first log line matching regex ``pattern``, waiting up to ``timeout``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if regex.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no log line matching {pattern!r} in {self.lines[-20:]}")
                self._cond.wait(remaining)


class RunningServer:
    """A :class:`ChatServer` serving on a background thread of the test process."""

    def __init__(
        self,
        pki: TestPKI,
        config: ServerConfig,
        clock: Callable[[], float] = time.time,
        **loop: float,
    ) -> None:
        self.pki = pki
        self.server = ChatServer(config, clock=clock, **loop)
        self.host, self.port = self.server.bind()
        self.log = LogCapture()
        self.log.thread_name = f"server-{self.port}"
        self.thread = threading.Thread(target=self._run, name=self.log.thread_name, daemon=True)
        self.error: BaseException | None = None
        logger = logging.getLogger("mtlschat.server")
        logger.setLevel(logging.INFO)
        logger.addHandler(self.log)
        self.thread.start()
        self.log.wait(r"listening on ")

    def _run(self) -> None:
        try:
            self.server.serve()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            raise

    def context(self, name: str | None, alpn: str | None = ALPN_JSON) -> ssl.SSLContext:
        """A client context for user ``name`` (None: no client certificate)."""
        bundle = self.pki.user(name) if name is not None else None
        return client_context(bundle, self.pki.ca_cert, alpn)

    def connect(self, name: str, alpn: str | None = ALPN_JSON) -> ChatClient:
        """Connect as ``name`` (TLS only; nothing read yet)."""
        return connect_as(self.port, self.pki, name, alpn)

    def join(self, name: str) -> ChatClient:
        """Connect as ``name`` in JSON mode and read the welcome."""
        return join_as(self.port, self.pki, name)

    def stop(self) -> None:
        """Graceful shutdown; re-raise anything the loop raised."""
        if self.thread.is_alive():
            self.server.stop()
            self.thread.join(DEADLINE)
        logging.getLogger("mtlschat.server").removeHandler(self.log)
        assert not self.thread.is_alive(), "server thread did not stop"
        if self.error is not None:
            raise self.error


ServerFactory = Callable[..., RunningServer]


@pytest.fixture
def start_server(pki: TestPKI) -> Iterator[ServerFactory]:
    """``start_server(pki=other, clock=time.time, rate=0, ...)``: an in-process server on
    127.0.0.1, port 0.

    ``close_linger`` and ``shutdown_grace`` go to :class:`ChatServer`, the rest to its config.
    """
    running: list[RunningServer] = []

    def start(
        use_pki: TestPKI | None = None,
        clock: Callable[[], float] = time.time,
        **settings: Any,
    ) -> RunningServer:
        p = use_pki or pki
        settings.setdefault("rate", 0)
        settings.setdefault("history", "off")  # (tests that want history give it a file)
        loop = {k: settings.pop(k) for k in ("close_linger", "shutdown_grace") if k in settings}
        config = ServerConfig(pki=p.dir, host="127.0.0.1", port=0, **settings)
        server = RunningServer(p, config, clock, **loop)
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def chat_server(start_server: ServerFactory) -> RunningServer:
    """A default in-process server on the session PKI."""
    return start_server()


@pytest.fixture
def spawn_server(
    tmp_path_factory: pytest.TempPathFactory,
    server_process_pool: Callable[..., contextlib.AbstractContextManager[ServerSpawner]],
) -> Iterator[ServerSpawner]:
    """``spawn_server(pki_dir, *flags)``: a real server process, killed at teardown if alive."""
    with server_process_pool(tmp_path_factory, deadline=DEADLINE) as spawn:
        yield spawn
