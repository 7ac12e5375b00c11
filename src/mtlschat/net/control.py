"""The control socket (``--control``): a local Unix socket for ``mtlschat admin``.

Who can use it: whoever can open the socket file. It is created mode 0600, owned by the user the
server runs as, so that user (and root) can; nobody else. It is bound in a private directory
(0700) and hard-linked into place, so it never exists at its path with a wider mode, and a live
socket of another server is never replaced (``link`` fails if the path exists).

The protocol: one request per connection, one JSON object on one line,
``{"command": "kick", "args": "bob spamming"}`` (``args``: the text after the chat command's
word, as an operator would type it), and one JSON line back, ``{"ok": true, "text": "..."}``
plus data for ``who`` and ``stats``; then the server closes the connection. It is served by the
server's own selectors loop, non-blocking: a client that stalls, floods or speaks garbage gets an
error line or is cut off after :data:`TIMEOUT` seconds, and costs at most :data:`MAX_REQUEST`
bytes of buffer (and the size of one reply).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import selectors
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

COMMANDS = ("who", "kick", "ban", "unban", "bans", "reload", "stats")
MAX_REQUEST = 16384  # bytes of one request line; longer is refused
MAX_CLIENTS = 16  # control connections at once; more are closed at once
TIMEOUT = 5.0  # seconds for a control client to send its request and read the reply
ACCEPT_BATCH = 16
ADMIN_ACTOR = "admin(shell)"  # who did it, for the room and the audit log

log = logging.getLogger("mtlschat.server")


class ControlError(Exception):
    """The control socket cannot be set up, or reached (one line for the user)."""


class ControlBusy(ControlError):
    """Another running server answers on that path."""


@dataclass(frozen=True)
class ControlSocket:
    """A listening control socket, and the inode it was created as (so that closing removes
    the path only if it is still ours)."""

    sock: socket.socket
    path: Path
    inode: tuple[int, int]

    def close(self) -> None:
        """Stop listening and remove the socket file (if it is still this one)."""
        self.sock.close()
        with contextlib.suppress(OSError):
            st = self.path.lstat()
            if (st.st_dev, st.st_ino) == self.inode:
                self.path.unlink()


def _answers(path: Path) -> bool:
    """Whether a server is listening on the Unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def listen(path: Path) -> ControlSocket:
    """A non-blocking listening Unix socket at ``path``, mode 0600.

    A socket left there by a server that is gone (nobody answers) is replaced; raises
    :class:`ControlBusy` if a server answers there, :class:`ControlError` if the path is
    something else or cannot be created.
    """
    path = path.expanduser()
    try:
        private = Path(tempfile.mkdtemp(prefix=".ctl-", dir=path.parent))
    except OSError as exc:
        raise ControlError(
            f"cannot create the control socket {path}: {exc.strerror or exc}"
        ) from None
    staged = private / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staged))  # in a 0700 directory: nobody else can reach it yet
        os.chmod(staged, 0o600)
        for _attempt in range(2):
            try:
                os.link(staged, path)  # atomic, and never over an existing file
                break
            except FileExistsError:
                _clear_stale(path)
        else:
            raise ControlBusy(_busy(path))
        st = path.lstat()
        sock.listen(MAX_CLIENTS)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ControlError(
            f"cannot create the control socket {path}: {exc.strerror or exc}"
        ) from None
    except ControlError:
        sock.close()
        raise
    finally:
        with contextlib.suppress(OSError):
            staged.unlink()
        with contextlib.suppress(OSError):
            private.rmdir()
    return ControlSocket(sock, path, (st.st_dev, st.st_ino))


def _busy(path: Path) -> str:
    return f"{path} is in use by another running server (give --control PATH, or off)"


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)  # (a too-long path has no strerror)


def _clear_stale(path: Path) -> None:
    """Remove ``path`` if it is a socket nobody answers on; else raise."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"{path} exists and is not a socket: move it away, or give --control")
    if _answers(path):
        raise ControlBusy(_busy(path))
    path.unlink(missing_ok=True)  # left by a server that was killed


class ControlClient:
    """One ``mtlschat admin`` connection: read one request line, queue the reply, close."""

    __slots__ = ("deadline", "drained", "inbuf", "outbuf", "owner", "replied", "sock")

    def __init__(self, owner: ControlServer, sock: socket.socket, now: float) -> None:
        self.owner = owner
        self.sock = sock
        self.deadline = now + TIMEOUT
        self.inbuf = b""
        self.outbuf = b""
        self.replied = False  # the reply is out: reading (and dropping) until the client closes
        self.drained = 0

    def on_ready(self, mask: int) -> None:
        """The socket is ready (the server's loop calls it: a ``LoopParticipant``)."""
        self.owner.serve(self)

    def read(self) -> bytes | None:
        """What the client sent, once it is a whole line (or too long, or the client closed:
        then the bytes so far); None while more is to come."""
        try:
            data = self.sock.recv(MAX_REQUEST + 1 - len(self.inbuf))
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        self.inbuf += data
        line, newline, _ = self.inbuf.partition(b"\n")
        if newline or not data or len(self.inbuf) > MAX_REQUEST:
            return line
        return None

    def reply(self, answer: dict[str, object]) -> None:
        """Queue ``answer`` as the one JSON reply line."""
        self.outbuf = json.dumps(answer).encode() + b"\n"

    def drain(self) -> bool:
        """Read and drop what the client still sends (closing a Unix socket with unread input
        resets it, and the client would lose the reply); True once it has closed (or sent too
        much)."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        self.drained += len(data)
        return not data or self.drained > 4 * MAX_REQUEST

    def write(self) -> bool:
        """Send what the socket takes; True once the reply is out (or the client is gone)."""
        try:
            sent = self.sock.send(self.outbuf)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        self.outbuf = self.outbuf[sent:]
        return not self.outbuf


Answer = Callable[[str, str, str], dict[str, object]]  # (command, args, who) -> the reply


class ControlServer:
    """The control socket's share of the event loop: accepts, reads requests, writes replies,
    expires the stalled; ``answer(command, args, who)`` does the work (``who`` names the peer
    process for the log: ``uid 1000, pid 4242``).
    """

    def __init__(self, listening: ControlSocket, sel: selectors.BaseSelector, answer: Answer):
        self.listening = listening
        self._sel = sel
        self._answer = answer
        self._clients: collections.deque[ControlClient] = collections.deque()  # deadline order
        sel.register(listening.sock, selectors.EVENT_READ, self)

    def on_ready(self, mask: int) -> None:
        """The listener is ready (the server's loop calls it: a ``LoopParticipant``)."""
        self._accept()

    def expire(self, now: float) -> float:
        """Cut off the clients past their deadline; the next deadline (monotonic; inf: none)."""
        while self._clients and self._clients[0].deadline <= now:
            self._close(self._clients[0])
        return self._clients[0].deadline if self._clients else math.inf

    def close(self) -> None:
        """Close every client and the listener; remove the socket file."""
        while self._clients:
            self._close(self._clients[0])
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(self.listening.sock)
        self.listening.close()

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _addr = self.listening.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # (out of file descriptors: the next round tries again)
                log.warning("control socket: accept failed: %s", exc.strerror or exc)
                return
            if len(self._clients) >= MAX_CLIENTS:
                sock.close()
                continue
            sock.setblocking(False)
            client = ControlClient(self, sock, time.monotonic())
            self._clients.append(client)
            self._sel.register(sock, selectors.EVENT_READ, client)

    def serve(self, client: ControlClient) -> None:
        """A client's socket is ready: read its request, answer, drain, close."""
        if client.replied:
            if client.drain():
                self._close(client)
            return
        if not client.outbuf:
            line = client.read()
            if line is None:
                return
            if not line.strip():
                self._close(client)  # closed (or an empty line) before asking anything
                return
            client.reply(self._reply(client.sock, line))
            self._sel.modify(client.sock, selectors.EVENT_WRITE, client)
        if client.write():
            client.replied = True
            try:
                client.sock.shutdown(socket.SHUT_WR)  # the client reads EOF after the reply
            except OSError:
                self._close(client)
                return
            self._sel.modify(client.sock, selectors.EVENT_READ, client)
            if client.drain():
                self._close(client)

    def _reply(self, sock: socket.socket, line: bytes) -> dict[str, object]:
        try:
            command, args = parse_request(line)
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        try:
            return self._answer(command, args, _peer(sock))
        except Exception:  # a bug must cost one request, never the server
            log.exception("control socket: internal error answering %r", command)
            return {"ok": False, "error": "internal error (see the server's log)"}

    def _close(self, client: ControlClient) -> None:
        with contextlib.suppress(ValueError):
            self._clients.remove(client)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(client.sock)
        client.sock.close()


def _peer(sock: socket.socket) -> str:
    """``uid U, pid P`` of the process at the other end (Linux), for the log."""
    try:
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, _PEERCRED, 12))
    except (OSError, struct.error):
        return "uid ?"
    return f"uid {uid}, pid {pid}"


_PEERCRED = getattr(socket, "SO_PEERCRED", 17)


def parse_request(line: bytes) -> tuple[str, str]:
    """``(command, args)`` of a request line; raises ``ValueError`` with a one-line reason."""
    if len(line) > MAX_REQUEST:
        raise ValueError(f"request longer than {MAX_REQUEST} bytes")
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):
        raise ValueError('expected one JSON object: {"command": "who", "args": ""}') from None
    if not isinstance(request, dict):
        raise ValueError('expected one JSON object: {"command": "who", "args": ""}')
    command, args = request.get("command"), request.get("args", "")
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}: use {', '.join(COMMANDS)}")
    if not isinstance(args, str):
        raise ValueError('"args" must be a string (as typed after the chat command)')
    return command, " ".join(args.split())


def request(path: Path, command: str, args: str = "", timeout: float = 30.0) -> dict[str, object]:
    """Send one request to the server listening on ``path``; its JSON reply (for the CLI).

    Raises :class:`ControlError` (one line) if no server listens there or the reply is garbled.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                f"no server is listening on {path} (is it running? is --control set?)"
            ) from None
        except OSError as exc:
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        data = b""
        try:
            sock.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
            while not data.endswith(b"\n"):
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(f"the server on {path} did not answer within {timeout:g}s") from None
        except OSError as exc:
            raise ControlError(f"lost the connection to {path}: {exc.strerror or exc}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"the server on {path} sent an answer that is not JSON") from None
    if not isinstance(reply, dict):
        raise ControlError(f"the server on {path} sent an answer that is not a JSON object")
    return reply
