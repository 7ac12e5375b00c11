"""Real processes for the client tests: ``mtlschat server`` and ``mtlschat client`` in pipe mode.

Everything waits on events (a line on a pipe, a line in a log) with generous deadlines; nothing
sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # conftest modules are not importable at run time (--import-mode=importlib)
    from conftest import CLIRunner, ServerSpawner

DEADLINE = 20.0  # two shared cores and other suites running: be patient, never flaky


class Client:
    """``python -m mtlschat client`` with pipes: write lines, wait for lines, collect the exit."""

    def __init__(self, *args: str | os.PathLike[str], env: Mapping[str, str]) -> None:
        """Start the client with ``args`` in exactly the environment ``env``."""
        cmd = [sys.executable, "-m", "mtlschat", "client", *map(str, args)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
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
        """Teardown: SIGTERM (a coverage run then still records the process), SIGKILL if it
        is still there after a few seconds: nothing outlives the test.
        """
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def loopback_server(
    handle: Callable[[socket.socket], None], host: str = "127.0.0.1"
) -> Iterator[int]:
    """A listener on ``host`` that gives every connection to ``handle`` (errors ignored), one
    at a time in a thread, until the block ends; yields its port."""
    listener = socket.create_server((host, 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                handle(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.fixture
def spawn_client(
    clean_environment: Callable[[Mapping[str, str] | None], dict[str, str]],
) -> Iterator[Callable[..., Client]]:
    """``spawn_client("--cert", bundle, "127.0.0.1:PORT", env={...})``: ``env`` is added to the
    environment (minus the caller's MTLSCHAT_* settings); killed at teardown if alive.
    """
    clients: list[Client] = []

    def spawn(*args: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Client:
        client = Client(*args, env=clean_environment(env))
        clients.append(client)
        return client

    yield spawn
    for client in clients:
        client.kill()


@pytest.fixture(scope="module")
def spawn_server(
    tmp_path_factory: pytest.TempPathFactory,
    server_process_pool: Callable[..., contextlib.AbstractContextManager[ServerSpawner]],
) -> Iterator[ServerSpawner]:
    """``spawn_server(pki_dir, *flags, port=0, log=None)``: a real server process (rate limit
    off), killed at teardown. Pass a previous server's ``port`` and ``log_path`` to restart it in
    place.
    """
    with server_process_pool(tmp_path_factory, "--rate", "0", deadline=DEADLINE) as spawn:
        yield spawn


@pytest.fixture
def run_client(mtlschat_cli: CLIRunner) -> CLIRunner:
    """``run_client("--cert", bundle, addr, env=..., input=...)``: run ``mtlschat client`` to
    completion (for the failure cases); never raises on exit != 0.
    """
    return functools.partial(mtlschat_cli, "client")
