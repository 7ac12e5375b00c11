"""Real processes for the client tests: ``mtlschat server`` and ``mtlschat client`` in pipe mode.

Everything waits on events (a line on a pipe, a line in a log) with generous deadlines; nothing
sleeps to synchronise.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

DEADLINE = 20.0  # two shared cores and other suites running: be patient, never flaky


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus the caller's MTLSCHAT_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSCHAT_")}
    env.update(extra)
    return env


class Server:
    """``python -m mtlschat server`` on 127.0.0.1 (port 0 = any), logging to a file."""

    def __init__(self, pki_dir: Path, log_path: Path, port: int = 0, *flags: str) -> None:
        self.pki_dir = pki_dir
        self.log_path = log_path
        cmd = [sys.executable, "-m", "mtlschat", "server", "--pki", str(pki_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--rate", "0", *flags]
        # A restarted server appends to the same log: only read what this process wrote.
        self._seen = len(log_path.read_text(errors="replace")) if log_path.exists() else 0
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=log, env=clean_env()
            )
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.wait_log(r"listening on "))
        assert match is not None
        self.port = int(match.group(1))

    def log(self) -> str:
        """What this server process logged (a restarted server appends to the same file)."""
        return self.log_path.read_text(errors="replace")[self._seen :]

    def wait_log(self, pattern: str, timeout: float = DEADLINE) -> str:
        """Poll the log (with a deadline) for a line matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log().splitlines():
                if regex.search(line):
                    return line
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no log line matching {pattern!r}:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM (graceful: clients get bye) and wait."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(DEADLINE)


class Client:
    """``python -m mtlschat client`` with pipes: write lines, wait for lines, collect the exit."""

    def __init__(self, *args: str | os.PathLike[str], env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "mtlschat", "client", *map(str, args)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(**(env or {})),
            text=True,
            bufsize=1,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._pump, args=(name, stream), daemon=True).start()

    def _pump(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put((name, line.rstrip("\n")))
        self._lines.put((name, None))

    def send(self, line: str) -> None:
        """Write one line to the client's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        """End of input: the client delivers what it has, says /quit and exits."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def _drain(self, timeout: float) -> bool:
        try:
            name, line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return False
        if line is not None:
            (self.out if name == "out" else self.err).append(line)
        return True

    def wait_out(self, text: str, timeout: float = DEADLINE) -> str:
        """The first stdout line containing ``text`` (waiting up to ``timeout``)."""
        return self._wait(self.out, text, timeout)

    def wait_err(self, text: str, timeout: float = DEADLINE) -> str:
        """The first stderr line containing ``text``."""
        return self._wait(self.err, text, timeout)

    def _wait(self, lines: list[str], text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in lines:
                if text in line:
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or (not self._drain(left) and self.proc.poll() is not None):
                raise TimeoutError(f"no line with {text!r}; out={self.out} err={self.err}")

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        """Wait for the process to exit and for its output to be collected; the exit code."""
        code = self.proc.wait(timeout)
        while self._drain(1.0):
            pass
        return code

    def kill(self) -> None:
        """Teardown: make sure nothing outlives the test."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def spawn_client() -> Iterator[Callable[..., Client]]:
    """``spawn_client("--cert", bundle, "127.0.0.1:PORT")``; killed at teardown if alive."""
    clients: list[Client] = []

    def spawn(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> Client:
        client = Client(*args, env=env)
        clients.append(client)
        return client

    yield spawn
    for client in clients:
        client.kill()


@pytest.fixture(scope="module")
def spawn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """``spawn_server(pki_dir, *flags, port=0, log=None)``: a real server process, killed at
    teardown.

    Pass a previous server's ``port`` and ``log_path`` to restart it in place.
    """
    servers: list[Server] = []

    def spawn(pki_dir: Path, *flags: str, port: int = 0, log: Path | None = None) -> Server:
        log = log or tmp_path_factory.mktemp("server") / "server.log"
        server = Server(pki_dir, log, port, *flags)
        servers.append(server)
        return server

    yield spawn
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def _run_client(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None, input: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run the client to completion (for the failure cases); never raises on exit != 0.

    ``env`` is added to the environment (minus the caller's MTLSCHAT_* variables).
    """
    return subprocess.run(
        [sys.executable, "-m", "mtlschat", "client", *map(str, args)],
        input=input,
        capture_output=True,
        text=True,
        env=clean_env(**(env or {})),
        timeout=60,
        check=False,
    )


@pytest.fixture
def run_client() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_client("--cert", bundle, addr, env=..., input=...)``: run to completion."""
    return _run_client
