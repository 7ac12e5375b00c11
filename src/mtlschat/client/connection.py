"""The client's connection: TLS over asyncio streams, reconnecting with backoff.

Given several servers (the nodes of one room), or a name with several addresses, a connect
tries each address in turn until one welcomes us; a reconnect starts with the server after the
one that was lost, and resumes there as on the same server.

:class:`Link` owns the socket. Front ends (pipe mode, the terminal UI) give it callbacks for
server events and connection status, hand it lines with :meth:`Link.send`, and await
:meth:`Link.run`, which returns after a clean ``/quit`` and raises :class:`ClientError` for a
failure the user must fix (a certificate problem, or no server at all on the first attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from collections import deque
from collections.abc import Callable, Sequence

from mtlschat.address import Address
from mtlschat.backoff import Backoff
from mtlschat.client.errors import ClientError, ExitCode
from mtlschat.client.outgoing import RATE_LIMITED, Pacer, RoomLimits, split_line
from mtlschat.client.protocol import ChatState, Event, is_quit, parse_line
from mtlschat.client.tls import certificate_names, handshake_error

# Failures worth retrying once we have been in the room: the server restarting, the network.
_TRANSIENT = frozenset({ExitCode.UNREACHABLE, ExitCode.REFUSED, ExitCode.PROTOCOL})
MAX_LINE = 1 << 20  # a /who of a big room is one long line
SEND_BATCH = 512  # lines per write when a lot is queued
QUIT_GRACE = 5.0  # seconds to wait for the server to close after /quit


def _why(exc: OSError) -> str:
    """Why a TCP connect failed, in words (asyncio joins one error per address it tried)."""
    refused = f"[Errno {errno.ECONNREFUSED}]"
    if isinstance(exc, ConnectionRefusedError) or (exc.errno is None and refused in str(exc)):
        return "connection refused (is the server running, on this port?)"
    return exc.strerror or str(exc)


def _detect_dead_peers(sock: socket.socket | None) -> None:
    """Notice a silently dropped network within about a minute, not TCP's ~15.

    Keepalive probes cover an idle connection; TCP_USER_TIMEOUT covers data left unacknowledged.
    Either way the read fails and the client reconnects. (Linux names; skipped elsewhere.)
    """
    if sock is None:
        return
    options = [
        (socket.SOL_SOCKET, getattr(socket, "SO_KEEPALIVE", None), 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), 30),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), 10),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), 60_000),
    ]
    for level, name, value in options:
        if name is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, name, value)


StatusCallback = Callable[[str, bool], None]  # (text, is_error)


async def _with_names(err: ClientError, target: Address, context: ssl.SSLContext) -> ClientError:
    """A host-name mismatch, completed with the names the certificate is valid for."""
    names = await certificate_names(target, context)
    if not names:
        return err
    valid = ", ".join(names)
    return ClientError(
        err.code,
        f"{err.message}; it is valid for {valid}: connect to one of those names",
        err.detail,
    )


class Link:
    """One logical connection to the room, surviving server restarts and network drops."""

    def __init__(
        self,
        servers: Address | Sequence[Address],
        context: ssl.SSLContext,
        on_event: Callable[[Event], None],
        on_status: StatusCallback,
        *,
        state: ChatState | None = None,
        backoff: Backoff | None = None,
        timeout: float = 15.0,
        on_sent: Callable[[str], None] | None = None,
    ) -> None:
        self.servers = [servers] if isinstance(servers, Address) else list(servers)
        self.address = self.servers[0]  # the server we are on (or were last on)
        self._first = 0  # index of the server the next connect tries first
        self.state = state or ChatState()
        self._ctx = context
        self._on_event = on_event
        self._on_status = on_status
        self._backoff = backoff or Backoff()
        self._timeout = timeout
        self._outbox: deque[str] = deque()
        self._on_sent = on_sent or (lambda line: None)  # a line handed to the socket
        self.limits = RoomLimits()
        self.pacer = Pacer()  # the room's rate, mirrored so no line is dropped (outgoing.py)
        self._writer: asyncio.StreamWriter | None = None
        self._kick = asyncio.Event()  # wakes the sender task and backoff sleeps
        self._quitting = False
        self._deliver_before_quit = False
        self._quit_sent = False

    @property
    def queued(self) -> int:
        """Lines waiting to be sent (a paste being paced, or lines typed while disconnected)."""
        return sum(1 for line in self._outbox if not is_quit(line))

    def cancel_queued(self) -> int:
        """Drop the lines not sent yet (Ctrl-C during a paste); how many were dropped."""
        kept = [line for line in self._outbox if is_quit(line)]
        dropped = len(self._outbox) - len(kept)
        self._outbox = deque(kept)
        return dropped

    @property
    def connected(self) -> bool:
        """True while in the room (welcomed and not yet disconnected)."""
        return self._writer is not None

    def send(self, line: str) -> None:
        """Queue ``line`` for the server; it is sent now, or after the next (re)connect."""
        if self._quitting:
            return
        if is_quit(line):
            self.quit(deliver=True, line=line)
            return
        self._outbox.append(line)
        self._kick.set()

    def quit(self, *, deliver: bool = False, line: str = "/quit") -> None:
        """Leave: send ``/quit`` and wait for the server to close.

        With ``deliver`` (pipe mode) queued lines are still delivered first, reconnecting if
        needed; otherwise a disconnected client gives up at once (Ctrl-D in the UI).
        """
        if self._quitting:
            return
        self._quitting = True
        self._deliver_before_quit = deliver
        self._outbox.append(line)
        self._kick.set()

    async def run(self) -> None:
        """Connect and stay connected until ``/quit``; raise :class:`ClientError` on failure."""
        welcomed_once = False
        while True:
            if self._quitting and not (self._deliver_before_quit and self._pending()):
                return
            try:
                reader, writer, first = await self._open()
            except ClientError as err:
                if not welcomed_once or err.code not in _TRANSIENT:
                    raise
                delay = self._backoff.next()
                self._on_status(
                    f"{err.message}; retrying in {delay:.1f}s (attempt {self._backoff.attempt})",
                    True,
                )
                await self._pause(delay)
                continue
            again = "re" if welcomed_once else ""
            self._on_status(f"{again}connected to {self.address}", False)
            replies, shown = self.state.receive(first)
            self.limits = RoomLimits.from_welcome(first)
            self.pacer.configure(self.limits, asyncio.get_running_loop().time())
            for event in shown:
                self._on_event(event)
            welcomed_once = True
            self._backoff.reset()
            # The replies (a /resume) go first, before anything the user queued meanwhile.
            writer.write("".join(line + "\n" for line in replies).encode("utf-8"))
            why = await self._session(reader, writer)
            if self._quit_sent:
                return
            # That server may be gone: try the others first (all serve the same room).
            self._first = (self.servers.index(self.address) + 1) % len(self.servers)
            delay = self._backoff.next()
            self._on_status(f"{why}; reconnecting in {delay:.1f}s", True)
            await self._pause(delay)

    def _pending(self) -> bool:
        return any(not is_quit(line) for line in self._outbox)

    async def _pause(self, seconds: float) -> None:
        """Sleep before a retry; Ctrl-D/``/quit`` (without delivery) cuts it short."""
        self._kick.clear()
        deadline = asyncio.get_running_loop().time() + seconds
        while not (self._quitting and not self._deliver_before_quit):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), left)
            self._kick.clear()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Event]:
        """Connect to the first server (and address of its name) that welcomes us.

        A failure worth retrying elsewhere (unreachable, refused, no welcome) moves on to the
        next address; any other (a certificate problem) is raised at once. If all fail, the
        :class:`ClientError` raised says why for each (once per distinct reason).
        """
        failures: list[ClientError] = []
        count = len(self.servers)
        for server in (self.servers[(self._first + i) % count] for i in range(count)):
            try:
                hosts = await self._resolve(server)
            except ClientError as err:
                failures.append(err)
                continue
            for host in hosts:
                self.address = server
                try:
                    return await self._open_one(server, host)
                except ClientError as err:
                    if err.code not in _TRANSIENT:
                        raise
                    failures.append(err)
        reasons = list(dict.fromkeys(err.message for err in failures))
        first = failures[0]
        raise ClientError(first.code, "; ".join(reasons), first.detail)

    async def _resolve(self, server: Address) -> list[str]:
        """The addresses ``server``'s host name stands for (each is tried in turn)."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                server.host, server.port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise ClientError(
                ExitCode.UNREACHABLE, f"cannot resolve {server.host}: {exc.strerror}"
            ) from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def _open_one(
        self, server: Address, host: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Event]:
        """TCP to ``host`` (one address of ``server``) + TLS + the server's first line; raise
        :class:`ClientError` with what failed."""
        where = str(server)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host,
                    server.port,
                    ssl=self._ctx,
                    server_hostname=server.host,
                    ssl_handshake_timeout=self._timeout,
                    limit=MAX_LINE,
                ),
                self._timeout,
            )
        except ssl.SSLError as exc:
            err = handshake_error(exc, where)
            if err.code is ExitCode.HOSTNAME_MISMATCH:
                err = await _with_names(err, server, self._ctx)
            raise err from None
        except TimeoutError:
            raise ClientError(ExitCode.UNREACHABLE, f"cannot reach {where}: timed out") from None
        except ConnectionResetError:
            raise ClientError(
                ExitCode.REFUSED, f"{where} closed the connection during the TLS handshake"
            ) from None
        except OSError as exc:
            raise ClientError(ExitCode.UNREACHABLE, f"cannot reach {where}: {_why(exc)}") from None
        _detect_dead_peers(writer.get_extra_info("socket"))
        try:
            first = await self._first_event(reader, where)
        except BaseException:
            writer.close()
            raise
        return reader, writer, first

    async def _first_event(self, reader: asyncio.StreamReader, where: str) -> Event:
        """Read the welcome. A rejected certificate shows up here as a TLS alert (TLS 1.3)."""
        refused: str | None = None
        while True:
            try:
                raw = await asyncio.wait_for(reader.readline(), self._timeout)
            except ssl.SSLError as exc:
                raise handshake_error(exc, where) from None
            except TimeoutError:
                raise ClientError(ExitCode.PROTOCOL, f"no welcome from {where}") from None
            except ValueError:  # asyncio's limit: a line over MAX_LINE
                raise ClientError(
                    ExitCode.PROTOCOL,
                    f"{where} sent a first line over 1 MiB: it does not speak mtlschat",
                ) from None
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise ClientError(
                    ExitCode.REFUSED, f"{where} closed the connection: {exc}"
                ) from None
            if not raw:
                raise ClientError(
                    ExitCode.REFUSED,
                    f"{where} refused the session: {refused}"
                    if refused
                    else f"{where} closed the connection before welcoming us",
                )
            event = parse_line(raw.decode("utf-8", "replace"))
            if event.type == "welcome":
                return event
            if event.type in ("error", "bye"):
                refused = event.text("text") or event.text("reason") or refused
                if event.type == "bye":
                    raise ClientError(ExitCode.REFUSED, f"{where} refused the session: {refused}")
                continue
            if event.type == "raw":
                raise ClientError(ExitCode.PROTOCOL, f"{where} does not speak mtlschat JSON")
            return event  # a newer server may greet differently: take it as the welcome

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        """Pump lines both ways until the connection ends; return why it ended."""
        self._writer = writer
        sender = asyncio.create_task(self._send_loop(writer))
        try:
            return await self._receive_loop(reader)
        finally:
            self._writer = None
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _receive_loop(self, reader: asyncio.StreamReader) -> str:
        bye: str | None = None
        while True:
            try:
                raw = await reader.readline()
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError) as exc:
                return f"connection lost ({exc})"
            if not raw:
                return f"server said bye ({bye})" if bye else "connection closed without a goodbye"
            event = parse_line(raw.decode("utf-8", "replace"))
            replies, shown = self.state.receive(event)
            for reply in replies:
                self._write(reply)
            if event.type == "bye":
                bye = event.text("reason")
            elif event.type == "error" and event.text("code") == RATE_LIMITED:
                self.pacer.refused(asyncio.get_running_loop().time())
            for item in shown:
                self._on_event(item)

    def _write(self, line: str) -> None:
        if self._writer is not None and not self._quit_sent:
            self._writer.write(line.encode("utf-8") + b"\n")

    def _next_batch(self, now: float) -> tuple[list[str], float]:
        """The lines that may go now (split to the room's line limit, within its rate), up to
        and including a ``/quit``; and how long to wait before more may go."""
        batch: list[str] = []
        while self._outbox and len(batch) < SEND_BATCH:
            line = self._outbox[0]
            if is_quit(line):
                batch.append(line)
                break
            parts = split_line(line, self.limits.max_line)
            if len(parts) > 1:
                self._outbox.popleft()
                self._outbox.extendleft(reversed(parts))
                line = parts[0]
            wait = self.pacer.delay(now)
            if wait > 0:
                return batch, wait
            self.pacer.take(now)
            batch.append(self._outbox.popleft())
        return batch, 0.0

    async def _send_loop(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._outbox and not self._quit_sent:
                # What may go now goes out as one write (a pasted block, a piped file), paced
                # to the room's rate so the server drops nothing.
                batch, wait = self._next_batch(loop.time())
                if batch:
                    try:
                        writer.write("".join(line + "\n" for line in batch).encode("utf-8"))
                        await writer.drain()
                    except BaseException:
                        # Not known to be sent: back to the queue, for after the reconnect.
                        self._outbox.extendleft(reversed(batch))
                        raise
                    for line in batch:
                        if not is_quit(line):
                            self._on_sent(line)
                    if is_quit(batch[-1]):
                        self._quit_sent = True
                        # The server answers /quit with bye and a close; don't hang if it doesn't.
                        await asyncio.sleep(QUIT_GRACE)
                        writer.transport.abort()
                        return
                    continue
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), wait)
                continue
            self._kick.clear()
            await self._kick.wait()
