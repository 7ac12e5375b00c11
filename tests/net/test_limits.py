"""Limits over real TLS: stalled handshakes, connection floods, slow consumers, liveness."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import TYPE_CHECKING

import pytest

from mtlschat.net import server as server_module
from mtlschat.net.config import ServerConfig
from mtlschat.net.server import ChatServer

from .conftest import DEADLINE, BioClient, ChatClient, client_context, stalled_client

if TYPE_CHECKING:
    from conftest import TestPKI

    from .conftest import RunningServer, ServerFactory


def _wait_until(predicate: object, timeout: float = DEADLINE) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _chat(a: ChatClient, b: ChatClient, text: str) -> None:
    a.send(text)
    assert b.wait_for("msg", text=text)["text"] == text


def _idle_socket(port: int, source: str) -> socket.socket:
    """A TCP connection from ``source`` (any 127.x address) that never says a word."""
    return socket.create_connection(
        ("127.0.0.1", port), timeout=DEADLINE, source_address=(source, 0)
    )


def test_idle_tcp_connections_do_not_block_joining(chat_server: RunningServer) -> None:
    idle: list[socket.socket] = []
    try:  # 1,000 silent sockets from 20 addresses: the whole default handshake budget
        for i in range(1000):
            idle.append(_idle_socket(chat_server.port, f"127.0.1.{1 + i % 20}"))
        _wait_until(lambda: chat_server.server.connection_count >= 1000)
        alice = chat_server.join("alice")
        bob = chat_server.join("bob")
        _chat(alice, bob, "the door is not jammed")
        _chat(bob, alice, "indeed")
    finally:
        for s in idle:
            s.close()


def test_idle_sockets_cannot_take_members_places(start_server: ServerFactory) -> None:
    """Pending handshakes do not count against --max-connections (issue 9.5)."""
    server = start_server(max_connections=4)
    idle = [_idle_socket(server.port, "127.0.0.2") for _ in range(8)]
    try:
        _wait_until(lambda: server.server.connection_count >= 8)
        members = [server.join(name) for name in ("alice", "bob", "carol", "dave")]
        _chat(members[0], members[3], "four members, eight strangers at the door")
    finally:
        for s in idle:
            s.close()


def test_pending_handshakes_per_address_are_capped(start_server: ServerFactory) -> None:
    server = start_server(max_handshakes_per_address=3)
    idle = [_idle_socket(server.port, "127.0.0.2") for _ in range(3)]
    try:
        _wait_until(lambda: server.server.connection_count == 3)
        fourth = _idle_socket(server.port, "127.0.0.2")
        with fourth, contextlib.suppress(ConnectionResetError):
            assert fourth.recv(100) == b""  # closed at once, long before the timeout
        server.log.wait(r"refused from 127\.0\.0\.2:\d+: 3 handshakes pending from this address")
        with _idle_socket(server.port, "127.0.0.3"):  # another address is let in
            _wait_until(lambda: server.server.connection_count == 4)
        alice = server.join("alice")  # (from 127.0.0.1)
        alice.send("/who")
    finally:
        for s in idle:
            s.close()


def test_full_handshake_budget_evicts_the_oldest(start_server: ServerFactory) -> None:
    server = start_server(max_handshakes=5)
    idle = [_idle_socket(server.port, f"127.0.0.{2 + i}") for i in range(5)]
    try:
        _wait_until(lambda: server.server.connection_count == 5)
        alice = server.join("alice")  # her handshake takes the oldest idle socket's place
        with contextlib.suppress(ConnectionResetError):
            assert idle[0].recv(100) == b""
        server.log.wait(r"rejected handshake from 127\.0\.0\.2:\d+: handshake budget full")
        bob = server.join("bob")
        _chat(alice, bob, "in, despite the crowd at the door")
    finally:
        for s in idle:
            s.close()


def test_handshake_timeout_drops_silent_peer(start_server: ServerFactory) -> None:
    server = start_server(handshake_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as raw:
        port = raw.getsockname()[1]
        assert raw.recv(100) == b""  # closed by the server, not by our timeout
    server.log.wait(rf"rejected handshake from 127\.0\.0\.1:{port}: handshake timeout")


def test_dribbled_handshake_delays_no_one(chat_server: RunningServer) -> None:
    alice = chat_server.join("alice")
    bob = chat_server.join("bob")
    with BioClient(chat_server.port, chat_server.context("carol")) as carol:
        hello = carol.start()
        step = max(1, len(hello) // 8)
        for i in range(0, len(hello), step):  # the ClientHello, a few bytes at a time
            carol.raw.sendall(hello[i : i + step])
            _chat(alice, bob, f"while carol dribbles {i}")
        carol.finish()
        assert b'"type":"welcome","name":"carol"' in carol.read_line()
    alice.wait_for("join", name="carol")


def test_partial_tls_record_is_readable_without_data(chat_server: RunningServer) -> None:
    """A record's first bytes make the socket readable but OpenSSL has no data yet."""
    alice = chat_server.join("alice")
    bob = chat_server.join("bob")
    with BioClient(chat_server.port, chat_server.context("carol")) as carol:
        carol.raw.sendall(carol.start())
        carol.finish()
        carol.read_line()  # welcome
        record = carol.encrypt("split across two TCP segments\n")
        carol.raw.sendall(record[:3])
        _chat(alice, bob, "the loop is not waiting for the rest of carol's record")
        carol.raw.sendall(record[3:])
        msg = alice.wait_for("msg", **{"from": "carol"})
        assert msg["text"] == "split across two TCP segments"


def test_pipelined_burst_all_lines_arrive_in_order(chat_server: RunningServer) -> None:
    alice = chat_server.join("alice")
    bob = chat_server.join("bob")
    # ~180 KB in one write: many TLS records, more than one 64 KiB read, lines split anywhere.
    lines = [f"line {i:04d} " + "x" * (i % 900) for i in range(400)]
    alice.sock.sendall("".join(f"{line}\n" for line in lines).encode())
    got = [bob.wait_for("msg")["text"] for _ in lines]
    assert got == lines


def test_slow_consumer_is_cut_off_others_unaffected(start_server: ServerFactory) -> None:
    server = start_server(out_buffer=64 * 1024)
    alice = server.join("alice")
    bob = server.join("bob")
    carol = stalled_client(server.port, server.context("carol"))  # reads her welcome only
    bob.wait_for("join", name="carol")

    line = "y" * 1500
    sent = 0
    while not any("slow consumer" in entry for entry in server.log.lines):
        assert sent < 20_000, "carol was never cut off"
        for _ in range(50):
            alice.send(f"{sent} {line}")
            sent += 1
        # bob keeps up and receives every line, in order, while carol's backlog grows.
        for i in range(sent - 50, sent):
            assert bob.wait_for("msg")["text"] == f"{i} {line}"
    entry = server.log.wait(r"disconnect carol from .*: slow consumer")
    assert "bytes unsent" in entry
    # (the leave may already have been read while bob was collecting his lines)
    leaves = [m for m in bob.seen if m["type"] == "leave"] or [bob.wait_for("leave")]
    assert leaves[0]["name"] == "carol"
    assert leaves[0]["reason"].startswith("slow consumer")
    _chat(alice, bob, "carol's gone, we're fine")
    carol.close()


def test_max_connections_refuses_extra(start_server: ServerFactory) -> None:
    server = start_server(max_connections=2)
    alice = server.join("alice")
    bob = server.join("bob")
    third = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)
    with third, contextlib.suppress(ConnectionResetError):
        assert third.recv(100) == b""
    server.log.wait(r"refused from 127\.0\.0\.1:\d+: max connections \(2\) reached")
    _chat(alice, bob, "still two of us")
    alice.send("/quit")
    alice.wait_closed()
    carol = server.join("carol")  # a place is free again
    _chat(bob, carol, "and now carol")


def test_keepalive_ping_then_idle_timeout(start_server: ServerFactory) -> None:
    server = start_server(keepalive=0.3, idle_timeout=2.0)
    alice = server.join("alice")
    assert alice.wait_for("ping")["type"] == "ping"  # silent for keepalive seconds
    alice.send("/pong")  # answered: the connection lives on, until silence reaches idle_timeout
    assert alice.wait_closed()[-1] == {"type": "bye", "reason": "idle timeout"}
    server.log.wait(r"disconnect alice from .*: idle timeout")


def test_a_join_storm_gets_a_slice_of_each_round_and_waits_in_the_backlog(
    pki: TestPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop driven round by round in this thread. With a zero slice, one handshake step
    # runs per round: the other ready ones wait for the next round (members in the room are
    # served in between), and while any wait, new connections stay in the kernel's backlog
    # (where no handshake timeout runs) instead of queueing for CPU behind them or evicting
    # handshakes under way.
    monkeypatch.setattr(server_module, "HANDSHAKE_SLICE", 0.0)
    srv = ChatServer(ServerConfig(pki=pki.dir, host="127.0.0.1", port=0, rate=0, history="off"))
    _, port = srv.bind()
    clients = [
        BioClient(port, client_context(pki.user(f"storm{i}"), pki.ca_cert)) for i in range(6)
    ]
    late: socket.socket | None = None
    try:
        srv._round(DEADLINE)
        assert srv.connection_count == 6
        for c in clients:
            c.raw.sendall(c.start())  # six ClientHellos, all ready for the same round
        srv._round(DEADLINE)
        assert srv._handshakes_deferred == 5
        late = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        for left in (4, 3, 2, 1, 0):
            srv._round(DEADLINE)
            assert (srv._handshakes_deferred, srv.connection_count) == (left, 6)
        for c in clients:  # each got its ServerHello: every deferred handshake went on
            c.receive()
        srv._round(DEADLINE)  # nothing deferred any more: the late one is let in
        assert srv.connection_count == 7
        assert not srv.stats.handshakes_refused
    finally:
        if late is not None:
            late.close()
        for c in clients:
            c.raw.close()
        srv._close_all()
