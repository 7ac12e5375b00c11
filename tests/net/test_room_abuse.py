"""Attacks on the room, against a real server process over real TLS (issue 9: 1, 8, 10, 11, 13).

Each test reproduces the attack as it was reported and fails without the room's defence.
"""

from __future__ import annotations

import contextlib
import glob
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mtlschat.chat.wire import ALPN_TEXT

from .conftest import DEADLINE, ChatClient, Closed, connect_as, join_as

if TYPE_CHECKING:
    from conftest import ServerProcess, TestPKI

    Spawn = Callable[..., ServerProcess]


def _msgs_until(observer: ChatClient, marker: str) -> list[dict[str, object]]:
    """Every msg ``observer`` receives up to (not including) the msg ``marker``."""
    got = []
    while (msg := observer.wait_for("msg"))["text"] != marker:
        got.append(msg)
    return got


def test_reconnecting_does_not_refill_the_rate_limit(pki: TestPKI, spawn_server: Spawn) -> None:
    """9.1: connect, 20 lines, /quit, again, with one certificate: 5,890 lines/s got through.

    With the bucket kept per name after the session leaves, the whole attack delivers about one
    burst plus ``rate`` lines per second, and the joins themselves run out.
    """
    server = spawn_server(pki.dir)  # the defaults: rate 5/s, burst 20, join-rate 0.2/s, burst 5
    observer = join_as(server.port, pki, "watcher")
    start = time.monotonic()
    refused = 0
    for cycle in range(10):
        mallory = connect_as(server.port, pki, "mallory")
        first = mallory.read()
        if first["type"] == "error":
            assert first["code"] == "too_many_joins", first
            assert [m["type"] for m in mallory.wait_closed()] == ["bye"]
            refused += 1
            continue
        assert first["type"] == "welcome"
        for i in range(20):
            mallory.send(f"cycle {cycle} line {i}")
        mallory.send("/quit")
        mallory.close()  # as the attacker does: no waiting for the bye
    marker = join_as(server.port, pki, "marker")
    marker.send("end of attack")
    got = _msgs_until(observer, "end of attack")
    elapsed = time.monotonic() - start
    delivered = [m for m in got if m["from"] == "mallory"]
    assert len(delivered) <= 20 + 5 * elapsed + 5, (len(delivered), elapsed)
    assert refused >= 10 - 5 - 0.2 * elapsed - 1  # the join bucket: 5, then one per 5 s
    assert "refused 'mallory' from 127.0.0.1:" in server.wait_log(r"refused 'mallory'.*joining")


def test_sessions_per_name_are_capped(pki: TestPKI, spawn_server: Spawn) -> None:
    """9.10: sessions of one certificate are capped (each costs memory and CPU every round)."""
    server = spawn_server(pki.dir, "--sessions-per-name", "2")
    first, second = join_as(server.port, pki, "alice"), join_as(server.port, pki, "alice")
    third = connect_as(server.port, pki, "alice")
    error, bye = third.wait_closed()
    assert (error["type"], error["code"]) == ("error", "too_many_sessions")
    assert bye == {"type": "bye", "reason": "too many sessions"}
    server.wait_log(r"refused 'alice' from 127\.0\.0\.1:\d+: too many sessions")
    first.send("/quit")
    first.wait_closed()
    join_as(server.port, pki, "alice")  # a freed slot can be used again
    second.send("still here")


def test_bidi_controls_and_separators_are_neutralised(pki: TestPKI, spawn_server: Spawn) -> None:
    """9.8: text and JSON clients never receive characters that reorder or split a line."""
    server = spawn_server(pki.dir)
    as_json = join_as(server.port, pki, "bob")
    as_text = connect_as(server.port, pki, "carol", ALPN_TEXT)
    assert as_text.read_line().startswith(b"* welcome carol")
    alice = join_as(server.port, pki, "alice")
    evil = "invoice\u202egnp.exe \u2066isolated\u2069 one\u2028two\u2029three"
    alice.send(evil)
    alice.send("/me " + evil)
    msg = as_json.wait_for("msg")
    assert msg["text"] == "invoice\ufffdgnp.exe \ufffdisolated\ufffd one\ufffdtwo\ufffdthree"
    assert as_json.wait_for("action")["text"] == msg["text"]
    lines = [as_text.read_line() for _ in range(3)]  # alice joined, her line, her action
    for raw in lines[1:]:
        text = raw.decode()
        assert "gnp.exe" in text
        assert not any(c in text for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
        assert "\u2028" not in text and "\u2029" not in text


def test_pongs_and_blank_lines_are_not_free(pki: TestPKI, spawn_server: Spawn) -> None:
    """9.13: /pong, whitespace-only lines and refused lines draw from the input budget: over it
    they are dropped unread (one notice), and the sender's chat still works once it refills."""
    server = spawn_server(pki.dir)  # input budget: 20 lines/s, depth 80; 2,000 may be dropped
    bob = join_as(server.port, pki, "bob")
    alice = join_as(server.port, pki, "alice")
    alice.sock.sendall(b"/pong\n   \n\t\n\xff\xfe\n" * 250)
    notice = alice.wait_for("error", code="rate_limited")
    assert "dropped unread" in notice["text"]
    # The input budget refills within seconds; until then a line may be dropped too: retry.
    deadline = time.monotonic() + DEADLINE
    while True:
        alice.send("after the flood")
        try:
            bob.wait_for("msg", timeout=1.0, text="after the flood")
            break
        except TimeoutError:
            assert time.monotonic() < deadline


def test_a_sustained_flood_is_disconnected(pki: TestPKI, spawn_server: Spawn) -> None:
    """9.13: a peer that keeps sending far over its input budget is cut off ("flooding")
    rather than keeping a core busy reading and decrypting lines that are dropped anyway."""
    server = spawn_server(pki.dir)
    bob = join_as(server.port, pki, "bob")
    alice = join_as(server.port, pki, "alice")
    try:
        for _ in range(100):
            alice.sock.sendall(b"/pong\n \n" * 5000)
    except OSError:
        pass  # cut off mid-flood
    with contextlib.suppress(Closed):  # (the bye may be lost to a reset: we kept sending)
        assert alice.wait_for("bye")["reason"] == "flooding"
    assert bob.wait_for("leave", name="alice")["reason"] == "flooding"
    server.wait_log(r"disconnect alice from 127\.0\.0\.1:\d+: flooding")


def _faketime_library() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    found += sorted(glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    if not found:
        pytest.skip("libfaketime.so.1 not found")
    return found[0]


def test_a_wall_clock_step_drops_no_one(
    pki: TestPKI, spawn_server: Spawn, external_tool: Callable[[str], str], tmp_path: Path
) -> None:
    """9.11: the server's wall clock jumps an hour ahead (NTP, a VM resume): nobody is dropped
    for "idle timeout", and the lines people see carry the new time."""
    external_tool("faketime")  # CI installs it; the library comes with the command
    offset = tmp_path / "offset"
    offset.write_text("+0\n")
    env = {
        "LD_PRELOAD": _faketime_library(),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "DONT_FAKE_MONOTONIC": "1",  # a real clock step leaves CLOCK_MONOTONIC alone
    }
    server = spawn_server(pki.dir, "--keepalive", "30", "--idle-timeout", "60", env=env)
    alice, bob = join_as(server.port, pki, "alice"), join_as(server.port, pki, "bob")
    alice.send("before")
    before = bob.wait_for("msg", text="before")["ts"]
    offset.write_text("+3600\n")
    # The room ticks at least once a second: after 2.5 s every member has been judged idle or not.
    deadline = time.monotonic() + 2.5
    with pytest.raises(TimeoutError):
        bob.wait_for("bye", timeout=max(0.0, deadline - time.monotonic()))
    alice.send("after")
    after = bob.wait_for("msg", text="after")["ts"]
    assert after - before > 3500  # timestamps follow the wall clock
    bob.send("bob is still here")
    assert alice.wait_for("msg", text="bob is still here")
    assert "idle timeout" not in server.log()
