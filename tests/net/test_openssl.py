"""The real ``openssl s_client`` chats, by hand-style text lines, with a Python client."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
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
