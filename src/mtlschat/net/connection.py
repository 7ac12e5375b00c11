"""One client connection as the event loop sees it: a TLS socket, its state and unsent bytes."""

from __future__ import annotations

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
    CLOSED = "closed"  # socket closed; only stale references remain


class Connection:
    """Per-connection state. ``__slots__`` and no preallocated buffers: 10k of these stay small."""

    __slots__ = (
        "deadline",
        "events",
        "fd",
        "peer",
        "pending",
        "read_wants_write",
        "reason",
        "serial",
        "session",
        "sock",
        "state",
        "unsent",
    )

    def __init__(self, sock: ssl.SSLSocket, peer: str, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer  # "host:port", for logs
        self.state = State.HANDSHAKE
        self.deadline = deadline  # handshake deadline, then the close linger deadline (monotonic)
        self.events = selectors.EVENT_READ  # what the selector is watching for
        self.session: Session | None = None
        self.serial = 0  # client certificate serial, checked against the CRL on SIGHUP
        # The exact bytes object of a write that raised SSLWantWriteError: OpenSSL needs the
        # retry to carry the same data, so nothing is appended to it.
        self.pending: bytes | None = None
        self.unsent = b""  # output queued behind ``pending``
        self.read_wants_write = False  # a recv raised SSLWantWriteError: retry it when writable
        self.reason = ""  # why the connection is closing

    @property
    def name(self) -> str:
        """The member's name, or ``-`` before the handshake completes."""
        return self.session.name if self.session is not None else "-"

    def queued(self) -> int:
        """Bytes accepted for this peer but not yet handed to OpenSSL."""
        return len(self.unsent) + (len(self.pending) if self.pending is not None else 0)
