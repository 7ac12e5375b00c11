"""Start a server under test as a child process and learn where it listens."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtlschat.bench import TARGETS
from mtlschat.bench.pki import BenchPKI

_LISTENING = re.compile(r"listening on \[?([^\s\]]+?)\]?:(\d+)\b")


class SpawnError(RuntimeError):
    """The server did not start (its last stderr lines are in the message)."""


# The baselines' scripts in the source tree's bench/ (they are not installed).
SCRIPTS = {
    "reference": "reference_server.py",
    "floor": "floor_server.py",
    "floor-raw": "floor_server.py",
}


def baseline_script(target: str) -> Path:
    """The source tree's script of the baseline server ``target`` (a key of SCRIPTS)."""
    return Path(__file__).resolve().parents[3] / "bench" / SCRIPTS[target]


def server_command(
    target: str, pki: BenchPKI, host: str, max_connections: int, port: int = 0
) -> list[str]:
    """The command line that runs ``target`` on ``port`` (0: an ephemeral one) with the bench
    PKI."""
    if target in ("mtlschat", "mtlschat-history"):
        history = "off"
        if target == "mtlschat-history":  # a new file per run: every run starts from empty
            fd, name = tempfile.mkstemp(prefix="history-", suffix=".db", dir=pki.dir)
            os.close(fd)
            os.unlink(name)
            history = name
        return [
            sys.executable, "-m", "mtlschat", "server",
            "--pki", str(pki.dir), "--host", host, "--port", str(port), "--rate", "0",
            "--max-connections", str(max_connections), "--history", history,
            # The load generator is one address with hundreds of handshakes in flight.
            "--max-handshakes-per-address", str(max_connections),
        ]  # fmt: skip
    if target in SCRIPTS:
        script = baseline_script(target)
        if not script.exists():
            raise SpawnError(f"the {target} server is not at {script} (run from a source tree)")
        return [
            sys.executable, str(script), "--host", host, "--port", str(port),
            "--ca", str(pki.ca_cert), "--cert", str(pki.server_bundle),
            *(["--raw"] if target == "floor-raw" else []),
        ]  # fmt: skip
    raise SpawnError(f"unknown server {target!r}: choose one of {', '.join(TARGETS)}")


@dataclass
class SpawnedServer:
    """A running server child: its pid, address, and the tail of its stderr."""

    target: str
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log: deque[str] = field(default_factory=lambda: deque(maxlen=50))

    @property
    def pid(self) -> int:
        """The server's process id (for /proc measurements)."""
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn_server(
    target: str, pki: BenchPKI, host: str = "127.0.0.1", max_connections: int = 10_000,
    timeout: float = 30.0, port: int = 0, extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> SpawnedServer:  # fmt: skip
    """Start ``target`` and wait (up to ``timeout``) for its ``listening on HOST:PORT`` line;
    ``extra`` flags are added to its command line (e.g. ``--redis URL``); ``env`` replaces the
    environment (``bench/ab.py`` points ``PYTHONPATH`` at another source tree)."""
    cmd = server_command(target, pki, host, max_connections, port) + list(extra)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)  # fmt: skip
    assert proc.stderr is not None
    stderr = proc.stderr
    log: deque[str] = deque(maxlen=50)
    found: list[tuple[str, int]] = []
    ready = threading.Event()

    def pump() -> None:
        # Keep draining stderr for the server's whole life so its logging never blocks.
        for raw in stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            log.append(line)
            if not found and (m := _LISTENING.search(line)):
                found.append((m.group(1), int(m.group(2))))
                ready.set()
        ready.set()

    threading.Thread(target=pump, name=f"{target}-stderr", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if time.monotonic() > deadline:
            break
    if not found:
        proc.kill()
        proc.wait()
        tail = " | ".join(list(log)[-5:])
        raise SpawnError(f"{target} server did not start: {tail or 'no output'}")
    return SpawnedServer(target, proc, found[0][0], found[0][1], log)
