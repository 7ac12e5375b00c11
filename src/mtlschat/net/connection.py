"""One client connection as the event loop sees it: a TLS socket, its state and its output queue."""

from __future__ import annotations

import collections
import enum
import selectors
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtlschat.chat.room import Session


class State(enum.Enum):
    """Where a connection is in its life."""

    HANDSHAKE = "handshake"  # TCP accepted, TLS handshake in progress
    OPEN = "open"  # verified, in the room
    CLOSING = "closing"  # the room said goodbye: flush what is queued, then close_notify
    DRAINING = "draining"  # handshake refused: alert sent, write side shut, reading until EOF
    CLOSED = "closed"  # socket closed; only stale references remain


class Connection:
    """Per-connection state. ``__slots__`` and no preallocated buffers: 10k of these stay small."""

    __slots__ = (
        "deadline",
        "events",
        "fd",
        "host",
        "out",
        "out_bytes",
        "peer",
        "pending",
        "read_wants_write",
        "reason",
        "serial",
        "session",
        "since",
        "sock",
        "state",
        "write_waits_for",
    )

    def __init__(self, sock: ssl.SSLSocket, peer: str, host: str, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer  # "host:port", for logs
        self.host = host  # the source address alone, for the per-address handshake cap
        self.state = State.HANDSHAKE
        self.deadline = deadline  # handshake deadline, then the close linger deadline (monotonic)
        self.events = selectors.EVENT_READ  # what the selector is watching for
        self.session: Session | None = None
        self.serial = 0  # client certificate serial, checked against the CRL on SIGHUP
        self.since = 0.0  # wall-clock time the handshake completed (`mtlschat admin who`)
        # Output is queued as the room hands it over, never copied into one growing buffer:
        # a peer that reads slowly costs an append per round, not a copy of its whole backlog.
        self.out: collections.deque[bytes] = collections.deque()
        self.out_bytes = 0  # bytes in ``out`` plus ``pending``: what the slow-consumer cap judges
        # The exact bytes object of a write that raised SSLWantWriteError: OpenSSL needs the
        # retry to carry the same data, so it is kept apart from ``out``.
        self.pending: bytes | None = None
        # The selector event a blocked write waits for (0: not blocked). Until it comes, new
        # output is only queued: no write is retried on a socket that cannot take it.
        self.write_waits_for = 0
        self.read_wants_write = False  # a recv raised SSLWantWriteError: retry it when writable
        self.reason = ""  # why the connection is closing

    @property
    def name(self) -> str:
        """The member's name, or ``-`` before the handshake completes."""
        return self.session.name if self.session is not None else "-"

    def queue(self, data: bytes) -> None:
        """Append output for this peer (no copy)."""
        self.out.append(data)
        self.out_bytes += len(data)

    def next_chunk(self, limit: int) -> bytes:
        """Take queued output for one TLS write: whole pieces, joined up to ``limit`` bytes.

        Pieces are one round's lines each; joining a few makes one write carry them all. A piece
        over ``limit`` goes alone and whole (OpenSSL cuts it into records, and a blocked write
        is retried with the same object, so nothing is copied).
        """
        out = self.out
        first = out.popleft()
        if not out or len(first) + len(out[0]) > limit:
            return first
        parts = [first]
        size = len(first)
        while out and size + len(out[0]) <= limit:
            piece = out.popleft()
            parts.append(piece)
            size += len(piece)
        return b"".join(parts)

    def clear(self) -> None:
        """Forget all output (the connection is gone)."""
        self.out.clear()
        self.out_bytes = 0
        self.pending = None
