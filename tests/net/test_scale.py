"""500 concurrent mTLS clients, driven by one selector in the test (no threads)."""

from __future__ import annotations

import json
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from mtlschat.chat.wire import ALPN_JSON

from .conftest import client_context

if TYPE_CHECKING:
    from conftest import ServerProcess, TestPKI

CLIENTS = 500
NAMES = 25  # 20 sessions per name: issuing 500 certificates would dominate the test
SENDERS = 3
LINES_EACH = 20
BATCH = 25  # handshakes in flight at once, under the server's per-address cap


class Peer:
    __slots__ = ("buf", "handshaken", "index", "msgs", "sock", "welcomed")

    def __init__(self, index: int, sock: ssl.SSLSocket) -> None:
        self.index = index
        self.sock = sock
        self.buf = b""
        self.handshaken = False
        self.welcomed = False
        self.msgs: list[tuple[int, str]] = []  # (id, text) of every msg received


def _pump(peer: Peer) -> None:
    """Advance the handshake or read everything available; parse complete lines."""
    sock = peer.sock
    try:
        if not peer.handshaken:
            sock.do_handshake()
            peer.handshaken = True
        data = sock.recv(262144)
        while n := sock.pending():
            data += sock.recv(n)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return
    assert data, f"client {peer.index} was disconnected"
    peer.buf += data
    *lines, peer.buf = peer.buf.split(b"\n")
    for line in lines:
        msg = json.loads(line)
        if msg["type"] == "msg":
            peer.msgs.append((msg["id"], msg["text"]))
        elif msg["type"] == "welcome":
            peer.welcomed = True


def _run_until(sel: selectors.BaseSelector, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "500-client test ran out of time"
        for key, _ in sel.select(0.5):
            _pump(key.data)


@pytest.mark.slow
def test_500_clients_each_receive_every_broadcast_in_order(
    pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server(pki.dir, "--rate", "0", "--join-rate", "0", "--sessions-per-name", "0")
    contexts = [
        client_context(pki.user(f"crowd{i:02d}"), pki.ca_cert, ALPN_JSON) for i in range(NAMES)
    ]
    sel = selectors.DefaultSelector()
    peers: list[Peer] = []
    try:
        for i in range(CLIENTS):
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            raw.setblocking(False)
            tls = contexts[i % NAMES].wrap_socket(
                raw, server_hostname="localhost", do_handshake_on_connect=False
            )
            peer = Peer(i, tls)
            peers.append(peer)
            sel.register(tls, selectors.EVENT_READ, peer)
            _pump(peer)  # send the ClientHello now
            if len(peers) % BATCH == 0:  # (one address may have only so many handshakes open)
                _run_until(sel, lambda: all(p.welcomed for p in peers), timeout=120)
        _run_until(sel, lambda: all(p.welcomed for p in peers), timeout=120)

        sent: dict[int, list[str]] = {s: [] for s in range(SENDERS)}
        for n in range(LINES_EACH):
            for s in range(SENDERS):
                text = f"from {s} line {n}"
                peers[s].sock.setblocking(True)
                peers[s].sock.sendall(text.encode() + b"\n")
                peers[s].sock.setblocking(False)
                sent[s].append(text)
        total = SENDERS * LINES_EACH

        def expected(p: Peer) -> int:
            return total - len(sent.get(p.index, []))

        _run_until(sel, lambda: all(len(p.msgs) >= expected(p) for p in peers), timeout=120)
    finally:
        for p in peers:
            p.sock.close()
        sel.close()

    # One global order: every id maps to one text everywhere, ids strictly increase for each
    # client, and each client got exactly everything but its own lines.
    by_id: dict[int, str] = {}
    for p in peers:
        ids = [i for i, _ in p.msgs]
        assert ids == sorted(set(ids)), f"client {p.index} saw messages out of order"
        for i, text in p.msgs:
            assert by_id.setdefault(i, text) == text
        own = set(sent.get(p.index, []))
        assert sorted(t for _, t in p.msgs) == sorted(
            t for ts in sent.values() for t in ts if t not in own
        )
    # Per sender, the server kept the order each sender used.
    for s, texts in sent.items():
        assert [by_id[i] for i in sorted(by_id) if by_id[i].startswith(f"from {s} ")] == texts
    assert server.stop() == 0
