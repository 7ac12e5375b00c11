"""Shared fixtures: a throw-away PKI (CA, server bundle, CRL, user bundles), the real CLI and a
real server process.

Every PKI lives in a temporary directory; no key ever touches the repository. ECDSA P-256 keys
make a session PKI with a handful of users cost a few milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from mtlschat.ca import CertificateAuthority

SERVER_HOSTS = ("localhost", "127.0.0.1", "::1")


class TestPKI:
    """A CA in ``dir`` with a server bundle for localhost and an (empty) CRL already written."""

    __test__ = False  # a helper, not a test class

    def __init__(self, root: Path) -> None:
        self.dir = root / "pki"
        self.ca = CertificateAuthority.init(self.dir)
        self.ca_cert = self.ca.paths.ca_cert
        self.crl = self.ca.paths.crl
        self.server_bundle = self.ca.issue_server(SERVER_HOSTS).path
        self._users = root / "users"
        self._users.mkdir()
        self._cache: dict[str, Path] = {}
        self._other_ca: CertificateAuthority | None = None
        self._root = root

    def user(self, name: str) -> Path:
        """The bundle of a valid user ``name`` (issued on first call, then cached)."""
        key = f"user:{name}"
        if key not in self._cache:
            self._cache[key] = self.ca.issue_user(name, out=self._users / f"{name}.pem").path
        return self._cache[key]

    def expired_user(self, name: str) -> Path:
        """A bundle for ``name`` signed by this CA whose validity lies entirely in the past."""
        key = f"expired:{name}"
        if key not in self._cache:
            start = datetime.now(UTC) - timedelta(days=30)
            self._cache[key] = self.ca.issue_user(
                name, days=1, not_before=start, out=self._users / f"{name}.expired.pem"
            ).path
        return self._cache[key]

    def other_ca_user(self, name: str) -> Path:
        """A bundle for ``name`` from an unrelated CA (same CA name, different key)."""
        key = f"other:{name}"
        if key not in self._cache:
            if self._other_ca is None:
                self._other_ca = CertificateAuthority.init(self._root / "other-pki")
            out = self._users / f"{name}.other.pem"
            self._cache[key] = self._other_ca.issue_user(name, out=out).path
        return self._cache[key]

    def revoke(self, name: str) -> None:
        """Revoke ``name``'s certificate(s) and rewrite the CRL."""
        self.ca.revoke(name)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """One PKI for the whole session: do not revoke in it (use ``fresh_pki``)."""
    return TestPKI(tmp_path_factory.mktemp("session-pki"))


@pytest.fixture
def fresh_pki(tmp_path: Path) -> TestPKI:
    """A PKI of this test's own, for tests that revoke or otherwise change it."""
    return TestPKI(tmp_path)


def under_ci() -> bool:
    """True in CI (``CI`` set, as .ci/run's runner does), where nothing may be skipped quietly."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def require_tool(name: str) -> str:
    """The path of the command-line tool ``name`` (``openssl``, ``keytool``).

    If it is missing, the test is skipped on a developer's machine but FAILS in CI: CI installs
    both (.ci/run), and an interoperability check must not vanish there without a sound.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if under_ci():
            pytest.fail(f"{message}; CI must install it (see .ci/run)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def external_tool() -> Callable[[str], str]:
    """:func:`require_tool`, for tests (conftest modules are not importable at run time)."""
    return require_tool


@pytest.fixture(scope="session")
def openssl() -> str:
    """The ``openssl`` command (skips without it, except in CI where it fails)."""
    return require_tool("openssl")


@pytest.fixture(scope="session")
def keytool() -> str:
    """Java's ``keytool`` (skips without it, except in CI where it fails)."""
    return require_tool("keytool")


CLIRunner = Callable[..., "subprocess.CompletedProcess[str]"]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment minus the caller's MTLSCHAT_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSCHAT_")}
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def clean_environment() -> Callable[[Mapping[str, str] | None], dict[str, str]]:
    """:func:`clean_env`, for the folders' conftest modules (they cannot import this one)."""
    return clean_env


def run_cli(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mtlschat ARGS`` as a real process; never raises on a non-zero exit.

    ``env`` is added to (not substituted for) the current environment, minus any MTLSCHAT_*
    variables of the caller's shell so tests are not influenced by them.
    """
    return subprocess.run(
        [sys.executable, "-m", "mtlschat", *map(str, args)],
        env=clean_env(env),
        cwd=cwd,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def mtlschat_cli() -> CLIRunner:
    """The :func:`run_cli` helper: ``mtlschat_cli("ca", "list", "--pki", d)``."""
    return run_cli


# A process left running at teardown gets SIGTERM and this long to exit before SIGKILL (the
# server's own shutdown grace is 3 s; a kill -9 would also lose a coverage run's data for it).
TEARDOWN_WAIT = 5.0
REDIS_DEADLINE = 10.0  # redis-server starts in milliseconds; a loaded 2-core box is slower


class ServerProcess:
    """``python -m mtlschat server`` on 127.0.0.1 (port 0 = any) as a real process, logging to a
    file. ``deadline`` bounds the start-up wait, :meth:`wait_log` by default and :meth:`stop`.
    """

    def __init__(
        self,
        pki_dir: Path,
        log_path: Path,
        *flags: str,
        port: int = 0,
        deadline: float,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.pki_dir = pki_dir
        self.log_path = log_path
        self.deadline = deadline
        # ``prefix`` wraps the process, e.g. ``("faketime", "-f", "+2d")`` to move its clock.
        cmd = [*prefix, sys.executable, "-m", "mtlschat", "server", "--pki", str(pki_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(port), *flags]
        if "--history" not in flags:  # (tests that want history give it a file)
            cmd += ["--history", "off"]
        # A restarted server appends to the same log: only read what this process wrote.
        self._seen = len(log_path.read_text(errors="replace")) if log_path.exists() else 0
        with log_path.open("ab") as log:
            # Its own process group: a wrapper such as faketime forks the server and does not
            # pass signals on, so stop() and kill() signal the whole group.
            self.proc = subprocess.Popen(
                cmd,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=clean_env(env),
                start_new_session=True,
            )
        line = self.wait_log(r"listening on 127\.0\.0\.1:\d+")
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match is not None
        self.port = int(match.group(1))

    def log(self) -> str:
        """What this server process logged (a restarted server appends to the same file)."""
        return self.log_path.read_text(errors="replace")[self._seen :]

    def wait_log(self, pattern: str, timeout: float | None = None) -> str:
        """Poll the log (with a deadline) for a line matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + (self.deadline if timeout is None else timeout)
        while True:
            for line in self.log().splitlines():
                if regex.search(line):
                    return line
            # Re-read after poll(): the line may have been written just before the exit.
            if self.proc.poll() is not None and not regex.search(self.log()):
                raise AssertionError(f"server exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no log line matching {pattern!r}:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM (graceful: clients get bye) and wait; the exit code."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
        return self.proc.wait(self.deadline)

    def kill(self) -> None:
        """Teardown: SIGTERM first, so the server exits as it does in use (and a coverage run
        records it), then SIGKILL the group: nothing outlives the test.
        """
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(TEARDOWN_WAIT)
        self._signal_group(signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait()

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)


ServerSpawner = Callable[..., ServerProcess]


@contextlib.contextmanager
def server_processes(
    tmp_path_factory: pytest.TempPathFactory, *default_flags: str, deadline: float
) -> Iterator[ServerSpawner]:
    """``with server_processes(factory, "--rate", "0", deadline=15) as spawn_server:`` yields
    ``spawn_server(pki_dir, *flags, port=0, log=None, prefix=(), env=None)`` and kills whatever
    is still alive on exit. Pass a previous server's ``port`` and ``log_path`` to restart it in
    place.
    """
    servers: list[ServerProcess] = []

    def spawn(
        pki_dir: Path,
        *flags: str,
        port: int = 0,
        log: Path | None = None,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> ServerProcess:
        log = log or tmp_path_factory.mktemp("server") / "server.log"
        server = ServerProcess(
            pki_dir,
            log,
            *default_flags,
            *flags,
            port=port,
            deadline=deadline,
            prefix=prefix,
            env=env,
        )
        servers.append(server)
        return server

    try:
        yield spawn
    finally:
        for server in servers:
            server.kill()


@pytest.fixture(scope="session")
def server_process_pool() -> Callable[..., contextlib.AbstractContextManager[ServerSpawner]]:
    """:func:`server_processes` for the folders' ``spawn_server`` fixtures (conftest modules
    cannot be imported at run time).
    """
    return server_processes


class Relay:
    """A TCP relay on 127.0.0.1 to a local port, whose network can fail like a real one:
    :meth:`reset` resets every relayed connection mid-stream (no close_notify, no bye),
    :meth:`cut` also refuses new ones until :meth:`heal`.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.down = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                with contextlib.suppress(OSError):
                    down.close()
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # nothing listens behind the relay: refuse, like the target would
                with contextlib.suppress(OSError):
                    down.close()
                continue
            self.pairs.append((down, up))
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._relay, args=(a, b), daemon=True).start()

    @staticmethod
    def _relay(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """Reset every relayed connection (SO_LINGER 0 sends RST); new ones are relayed."""
        for down, up in self.pairs:
            for sock in (down, up):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    # shutdown wakes the relay thread blocked in recv; only then does close
                    # really release the socket (and reset the connection)
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
        self.pairs.clear()

    def cut(self) -> None:
        """The network is down: reset every connection and refuse new ones."""
        self.down.set()
        self.reset()

    def heal(self) -> None:
        """The network is back: relay new connections again."""
        self.down.clear()

    def close(self) -> None:
        """Teardown: reset everything and stop listening."""
        self.reset()
        self.listener.close()


@pytest.fixture
def tcp_relay() -> Iterator[Callable[[int], Relay]]:
    """``tcp_relay(port)``: a :class:`Relay` on 127.0.0.1 to ``port``, closed at teardown."""
    relays: list[Relay] = []

    def start(port: int) -> Relay:
        relays.append(Relay(port))
        return relays[-1]

    yield start
    for relay in relays:
        relay.close()


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1, in a directory of its own, with no persistence (so
    :meth:`restart` brings it back EMPTY, like a Redis that lost its data). ``tls=(bundle, ca)``
    serves TLS only (``rediss://``), ``password`` sets ``requirepass``.
    """

    __test__ = False

    def __init__(
        self,
        exe: str,
        root: Path,
        *,
        password: str | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.exe = exe
        self.dir = root
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._paused = False

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (``rediss://`` with TLS)."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _config(self) -> str:
        lines = [
            "bind 127.0.0.1",
            f"dir {self.dir}",
            'save ""',
            "appendonly no",
            "daemonize no",
            'logfile ""',
        ]
        if self.tls is None:
            lines.append(f"port {self.port}")
        else:
            bundle, ca = self.tls
            lines += ["port 0", f"tls-port {self.port}", f"tls-cert-file {bundle}"]
            lines += [f"tls-key-file {bundle}", f"tls-ca-cert-file {ca}", "tls-auth-clients no"]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Start it and wait until it answers PING (its "ready" log line, then a real PING)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        first = self.proc is None
        for _ in range(5):
            try:
                self._start_once()
                return
            except AssertionError:
                # The port was free when picked, but another process may bind it before we do:
                # a first start moves to a new one (a restart keeps its port, as clients expect).
                if not first or not any("Address already in use" in x for x in self.output):
                    raise
                self.port = free_port()
                self.output.clear()
        raise AssertionError("redis-server: no free port in 5 tries")

    def _start_once(self) -> None:
        conf = self.dir / "redis.conf"
        conf.write_text(self._config())
        conf.chmod(0o600)  # (it may hold the test's password)
        self.proc = subprocess.Popen(
            [self.exe, str(conf)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        ready = threading.Event()
        threading.Thread(target=self._pump, args=(self.proc, ready), daemon=True).start()
        if not ready.wait(REDIS_DEADLINE) or self.proc.poll() is not None:
            self.kill()
            raise AssertionError("redis-server did not start:\n" + "\n".join(self.output))
        assert self.client().ping()

    def _pump(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line.rstrip("\n"))
            if "Ready to accept connections" in line:
                ready.set()
        ready.set()  # exited: start() sees it

    def client(self, **options: Any) -> redis.Redis:
        """A redis-py client for the test to look at or prepare this Redis (tests only)."""
        kwargs: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "password": self.password}
        if self.tls is not None:
            kwargs.update(ssl=True, ssl_ca_certs=str(self.tls[1]))
        kwargs.update(socket_timeout=REDIS_DEADLINE, **options)
        return redis.Redis(**kwargs)

    def stop(self) -> None:
        """SIGTERM and wait for it to exit (resumed first if paused)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(REDIS_DEADLINE)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        """Stop, then start on the same port: it comes back EMPTY (no persistence)."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the process stops answering, its connections stay open (a stalled Redis)."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._paused and self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self._paused = False

    def kill(self) -> None:
        """Teardown: SIGKILL and reap; nothing outlives the test."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


RedisSpawner = Callable[..., RedisServer]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def start_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSpawner]:
    """``start_redis(password=None, tls=None)``: a started :class:`RedisServer` of the test's
    own; all are killed at teardown. Skips without redis-server, except in CI (fails there).
    """
    exe = require_tool("redis-server")
    servers: list[RedisServer] = []

    def start(*, password: str | None = None, tls: tuple[Path, Path] | None = None) -> RedisServer:
        server = RedisServer(exe, tmp_path_factory.mktemp("redis"), password=password, tls=tls)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def redis_server(start_redis: RedisSpawner) -> RedisServer:
    """A real, empty ``redis-server`` on a free loopback port (see :class:`RedisServer`)."""
    return start_redis()
