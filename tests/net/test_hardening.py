"""Attacks from issue 9 against a real server process: each test reproduces one."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import TYPE_CHECKING

from .conftest import DEADLINE, ChatClient, client_context, stalled_client

if TYPE_CHECKING:
    from conftest import ServerSpawner, TestPKI

    from .conftest import ServerProcess


def _never_reader(port: int, pki: TestPKI, name: str) -> ChatClient:
    return stalled_client(port, client_context(pki.user(name), pki.ca_cert))


def _join(server: ServerProcess, pki: TestPKI, name: str) -> ChatClient:
    client = ChatClient(server.port, client_context(pki.user(name), pki.ca_cert))
    client.wait_for("welcome")
    return client


def test_never_reading_members_are_cut_off_at_the_cap(
    pki: TestPKI, spawn_server: ServerSpawner
) -> None:
    """Issue 9.10: what a never-reading member has not taken is bounded by --out-buffer plus
    --send-buffer, not by the kernel's autotuned megabytes; all of them go within seconds."""
    cap = 128 * 1024
    server = spawn_server(pki.dir, "--rate", "0", "--out-buffer", str(cap))
    alice = _join(server, pki, "alice")
    bob = _join(server, pki, "bob")
    sleepers = [_never_reader(server.port, pki, f"sleeper{i:02d}") for i in range(10)]
    line = "z" * 1000
    sent = 0
    start = time.monotonic()
    try:
        while server.log().count("slow consumer") < len(sleepers):
            assert time.monotonic() - start < DEADLINE, "never-readers were not cut off in time"
            for _ in range(64):
                alice.send(f"{sent} {line}")
                sent += 1
            for i in range(sent - 64, sent):  # bob keeps up and gets every line
                assert bob.wait_for("msg")["text"] == f"{i} {line}"
        # Each sleeper held at most the cap, a kernel send buffer (fixed, 128 KiB asked, 256 KiB
        # granted) and its own 4 KiB window: far less than the 2 MB of output sent here.
        assert sent * len(line) < 1024 * 1024, f"{sent} lines before the cut"
        for entry in server.log().splitlines():
            if "slow consumer" in entry:
                unsent = int(entry.split("slow consumer: ")[1].split()[0])
                assert cap <= unsent < 2 * cap, entry  # (plus at most one round's output)
        alice.send("still here")
        assert bob.wait_for("msg")["text"] == "still here"
    finally:
        for s in sleepers:
            s.close()


def test_refused_handshakes_are_summarised(pki: TestPKI, spawn_server: ServerSpawner) -> None:
    """Issue 9.9: a flood of refused handshakes costs a few log lines, not one each."""
    server = spawn_server(pki.dir)
    flood = 200
    for _ in range(flood):  # plaintext where a ClientHello should be: refused at once
        with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as raw:
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
            raw.settimeout(DEADLINE)
            with contextlib.suppress(ConnectionResetError):
                while raw.recv(4096):
                    pass
    assert server.stop() == 0
    lines = server.log().splitlines()
    detailed = [entry for entry in lines if "rejected handshake from" in entry]
    assert 1 <= len(detailed) <= 5, detailed
    summaries = [entry for entry in lines if "more refused in the last" in entry]
    hidden = sum(int(entry.split(" WARNING ")[1].split()[0]) for entry in summaries)
    assert hidden + len(detailed) == flood, summaries
    assert len(lines) < 20, lines
