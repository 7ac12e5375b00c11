"""The real ``openssl s_client`` chats, by hand-style text lines, with a Python client."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .conftest import DEADLINE

if TYPE_CHECKING:
    from .conftest import RunningServer


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float = DEADLINE) -> bytes:
    """Read s_client's stdout until ``needle`` appears (with a deadline); return all read."""
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while needle not in out:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"s_client never printed {needle!r}; got {out!r}")
            if sel.select(remaining):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"s_client exited ({proc.wait()}); output {out!r}")
                out += chunk
    return out


def test_openssl_s_client_chats_with_python_client(
    chat_server: RunningServer, openssl: str
) -> None:
    bundle = str(chat_server.pki.user("alice"))
    cmd = [openssl, "s_client", "-quiet", "-cert", bundle, "-key", bundle]
    cmd += ["-CAfile", str(chat_server.pki.ca_cert), "-connect", f"127.0.0.1:{chat_server.port}"]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdin is not None
        _read_until(proc, b"* welcome alice.")  # text mode: no ALPN from s_client
        bob = chat_server.join("bob")
        _read_until(proc, b"* bob joined\n")

        proc.stdin.write(b"hello from openssl\n")
        proc.stdin.flush()
        msg = bob.wait_for("msg")
        assert (msg["from"], msg["text"]) == ("alice", "hello from openssl")

        bob.send("hello back, s_client")
        assert b"<bob> hello back, s_client\n" in _read_until(proc, b"hello back, s_client\n")

        proc.stdin.write(b"/quit\n")
        proc.stdin.flush()
        assert b"* bye: quit" in _read_until(proc, b"* bye: quit\n")
        bob.wait_for("leave", name="alice")
        assert proc.wait(DEADLINE) == 0  # close_notify from the server ends s_client cleanly
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_openssl_s_client_sees_dated_history_then_searches(
    start_server: Callable[..., RunningServer], openssl: str, tmp_path: Path
) -> None:
    server = start_server(history=str(tmp_path / "h.db"))
    bob = server.join("bob")
    for i in range(1, 26):
        bob.send(f"note {i}")
    bob.send("/who")
    bob.wait_for("who")  # every line before it is stored
    bundle = str(server.pki.user("alice"))
    cmd = [openssl, "s_client", "-quiet", "-cert", bundle, "-key", bundle]
    cmd += ["-CAfile", str(server.pki.ca_cert), "-connect", f"127.0.0.1:{server.port}"]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdin is not None
        out = _read_until(proc, b"* end of history\n")
        assert b"* history: the last 20 lines (/history N for more)\n" in out
        lines = [line for line in out.splitlines() if b"<bob> note" in line]
        assert [line.rsplit(b" ", 1)[1] for line in lines] == [b"%d" % i for i in range(6, 26)]
        assert all(re.match(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] <bob> ", line) for line in lines)
        proc.stdin.write(b"/search note 1\n")
        proc.stdin.flush()
        out = _read_until(proc, b"* end of history\n")
        assert b"* search: the last 11 lines matching note 1\n" in out
        proc.stdin.write(b"/quit\n")
        proc.stdin.flush()
        proc.wait(DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
