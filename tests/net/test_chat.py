"""Three real mTLS clients chat through an in-process server."""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING

from .conftest import ChatClient, client_context

if TYPE_CHECKING:
    from .conftest import RunningServer


def test_three_clients_chat_in_server_order(chat_server: RunningServer) -> None:
    alice = chat_server.join("alice")
    bob = chat_server.join("bob")
    alice.wait_for("join", name="bob")
    carol = chat_server.join("carol")
    for c in (alice, bob):
        c.wait_for("join", name="carol")

    alice.send("hello from alice")
    bob.send("hi, bob here")
    carol.send("carol says hey")
    alice.send("again")

    expected = {
        "alice": [("bob", "hi, bob here"), ("carol", "carol says hey")],
        "bob": [("alice", "hello from alice"), ("carol", "carol says hey"), ("alice", "again")],
        "carol": [("alice", "hello from alice"), ("bob", "hi, bob here"), ("alice", "again")],
    }
    ids: dict[str, list[int]] = {}
    for name, client in (("alice", alice), ("bob", bob), ("carol", carol)):
        got = [client.wait_for("msg") for _ in expected[name]]
        # Each sees the others' lines, never its own; same texts from the same senders...
        assert sorted((m["from"], m["text"]) for m in got) == sorted(expected[name])
        ids[name] = [m["id"] for m in got]
        assert ids[name] == sorted(ids[name])  # ...in increasing id order
        # Per sender, order is preserved.
        assert [m["text"] for m in got if m["from"] == "alice"] == [
            t for s, t in expected[name] if s == "alice"
        ]
    # One server order: any two clients agree on the relative order of the lines both saw.
    for a, b in (("bob", "carol"),):
        common = set(ids[a]) & set(ids[b])
        assert [i for i in ids[a] if i in common] == [i for i in ids[b] if i in common]


def test_dm_who_and_leave(chat_server: RunningServer) -> None:
    alice = chat_server.join("alice")
    bob = chat_server.join("bob")
    carol = chat_server.join("carol")
    alice.wait_for("join", name="carol")
    bob.wait_for("join", name="carol")

    alice.send("/msg bob psst bob")
    dm = bob.wait_for("dm")
    assert (dm["from"], dm["to"], dm["text"]) == ("alice", "bob", "psst bob")
    echo = alice.wait_for("dm")
    assert echo["text"] == "psst bob"
    carol.send("/who")
    assert carol.wait_for("who")["online"] == ["alice", "bob", "carol"]
    # carol saw no DM: the /who answer came first and nothing else of alice's is pending.
    assert not [m for m in carol.seen if m["type"] == "dm"]

    bob.send("/quit")
    bye = bob.wait_closed()
    assert [m["type"] for m in bye] == ["bye"]
    for c in (alice, carol):
        assert c.wait_for("leave", name="bob")["name"] == "bob"
    carol.send("/who")
    assert carol.wait_for("who")["online"] == ["alice", "carol"]

    # A peer that vanishes without close_notify (plain TCP FIN) is noticed and announced too.
    # (CPython sends close_notify only from unwrap(), never from close().)
    carol.sock.shutdown(socket.SHUT_RDWR)
    carol.close()
    alice.wait_for("leave", name="carol")
    chat_server.log.wait(r"disconnect carol from 127\.0\.0\.1:\d+")


def test_tls_settings_seen_by_a_client(chat_server: RunningServer) -> None:
    alice = chat_server.join("alice")
    assert alice.sock.version() == "TLSv1.3"
    assert alice.sock.selected_alpn_protocol() == "mtlschat-json/1"
    # num_tickets = 0: no TLS 1.3 session tickets (each costs server CPU on every handshake).
    session = alice.sock.session
    assert session is None or not session.has_ticket
    # TLS 1.2 is still welcome (1.1 is refused: see test_reject).
    ctx = client_context(
        chat_server.pki.user("bob"), chat_server.pki.ca_cert, maximum_version=ssl.TLSVersion.TLSv1_2
    )
    bob = ChatClient(chat_server.port, ctx)
    assert bob.wait_for("welcome")["name"] == "bob"
    assert bob.sock.version() == "TLSv1.2"
    bob.send("over TLS 1.2")
    assert alice.wait_for("msg")["text"] == "over TLS 1.2"


def test_text_mode_without_alpn(chat_server: RunningServer) -> None:
    alice = chat_server.connect("alice", alpn=None)
    assert alice.read_line().startswith(b"* welcome alice")
    bob = chat_server.join("bob")
    assert alice.read_line() == b"* bob joined"
    bob.send("plain text")
    assert alice.read_line().endswith(b"<bob> plain text")


def test_half_closed_peer_gets_its_answers(chat_server: RunningServer) -> None:
    """Like `printf '/who\\n' | ncat --ssl ...`: lines, then TCP FIN, then read the answers."""
    alice = chat_server.join("alice")
    bob = chat_server.join("bob")
    bob.send("/who")
    bob.send("bye for now")
    socket.socket.shutdown(bob.sock, socket.SHUT_WR)  # TCP half-close, TLS state untouched
    assert bob.wait_for("who")["online"] == ["alice", "bob"]
    bob.wait_closed()
    assert alice.wait_for("msg")["text"] == "bye for now"
    assert alice.wait_for("leave", name="bob")["reason"] == "closed by peer"
