"""``mtlschat server --workers N``: N worker processes on one port, supervised by this one.

Each worker is a whole server (its own selectors loop, :func:`~mtlschat.net.server.run_server`)
forked from the supervisor, with its own listening socket bound with ``SO_REUSEPORT``: the kernel
spreads new connections over the workers' sockets, and over the remaining ones while a worker is
down. The supervisor holds one more socket bound to the port (never listening, so it is given no
connections) for the port to stay ours while a worker restarts, and for ``--port 0`` to pick one
port for all.

The supervisor serves nothing and runs no threads. It waits for signals with ``sigtimedwait``
(they stay blocked, so nothing is lost between two waits): SIGCHLD reaps a worker and schedules its
restart (at once after a stable run, then with a doubling delay while it keeps dying quickly);
SIGTERM, SIGINT and SIGHUP are passed on to every worker; after a stop signal it exits once all
workers are gone (SIGKILLing those still there after :data:`STOP_TIMEOUT`).

Worker ``K`` (0 to N-1) is node ``NODE-wK`` (its log lines, its metrics' node label) and serves
its metrics, if asked, on the metrics port + K.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from mtlschat.address import Address
from mtlschat.backoff import Backoff
from mtlschat.net.config import ConfigError, ServerConfig
from mtlschat.net.tls import TLSSetupError

log = logging.getLogger("mtlschat.workers")

RESTART_FIRST = 0.5  # seconds before restarting a worker that died soon after it started
RESTART_CAP = 30.0  # the longest wait between restarts of a worker that keeps dying
STABLE = 30.0  # a worker that ran this long died of something new: restart it at once
STOP_TIMEOUT = 15.0  # after a stop signal, workers still alive then are killed (SIGKILL)
EX_STARTUP = 78  # a worker's exit code when it could not start (sysexits' EX_CONFIG)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_WAITED = {*FORWARDED, signal.SIGCHLD}


@dataclass
class Worker:
    """One worker slot: the process in it now, and when to start the next one."""

    index: int
    config: ServerConfig
    pid: int | None = None
    started: float = 0.0  # monotonic
    restart_at: float | None = None  # monotonic; None while running (or never to restart)
    runs: int = 0
    # Restart delays while it keeps dying soon after its start (reset after a stable run).
    backoff: Backoff = dataclasses.field(
        default_factory=lambda: Backoff(initial=RESTART_FIRST, cap=RESTART_CAP)
    )

    @property
    def node(self) -> str:
        """The worker's node id, as in its logs and metrics."""
        return self.config.node or ""


def worker_config(config: ServerConfig, index: int, port: int) -> ServerConfig:
    """Worker ``index``'s settings: node ``NODE-wK``, metrics on port + K, control socket
    ``control-wK.sock`` (next to the one configured), no pidfile (the supervisor's), one
    process, the port the supervisor holds."""
    base = config.node or socket.gethostname()
    metrics = config.metrics
    if metrics is not None:
        metrics = shifted_metrics(metrics, index)
    control = config.control_path
    return dataclasses.replace(
        config,
        node=f"{base}-w{index}",
        metrics=metrics,
        control="off"
        if control is None
        else str(control.with_name(f"{control.stem}-w{index}{control.suffix}")),
        pidfile=None,
        workers=1,
        port=port,
    )


def shifted_metrics(where: str, index: int) -> str:
    """``--metrics [HOST:]PORT`` for worker ``index``: PORT + index (port 0 stays 0: any)."""
    from mtlschat.net.metrics import metrics_address  # (prometheus_client)

    try:
        address = metrics_address(where)
    except ValueError as exc:
        raise ConfigError(f"bad --metrics address: {exc}") from None
    if address.port == 0:
        return where
    port = address.port + index
    if port > 65535:
        raise ConfigError(f"--metrics {where}: worker {index} would need port {port} (> 65535)")
    return str(Address(address.host, port))


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to ``host:port`` with ``SO_REUSEPORT``, which workers'
    sockets can join; raise :class:`~mtlschat.net.server.StartupError` if the port is taken.

    A plain bind is tried first: it fails if anything listens there, even another group of
    ``SO_REUSEPORT`` sockets, which a second supervisor on the same port would otherwise join.
    It also turns port 0 into the port every worker will use.
    """
    from mtlschat.net.server import StartupError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            port = probe.getsockname()[1]
        held = socket.socket(family, socket.SOCK_STREAM)
        try:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            held.bind((host, port))
        except BaseException:
            held.close()
            raise
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return held


def _run_worker(
    worker: Worker, reread: Callable[[], dict[str, object]] | None, held: socket.socket
) -> int:
    """In the forked child: serve as ``worker`` until a stop signal; the process's exit code."""
    from mtlschat.logformat import tag_log_lines
    from mtlschat.net.server import StartupError, run_server

    held.close()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    # SIGTERM/INT/HUP stay blocked until the server's handlers are in (it unblocks them), so a
    # reload or stop sent while this worker starts is acted on, not fatal.
    tag_log_lines(worker.node)
    try:
        run_server(worker.config, reread, reuse_port=True)
    except (ConfigError, TLSSetupError, StartupError) as exc:
        log.error("%s", exc)
        return EX_STARTUP
    except Exception:
        log.exception("worker %s crashed", worker.node)
        return 1
    return 0


class Supervisor:
    """Starts, restarts and stops the workers. Runs in the main thread of a thread-less process
    (it forks)."""

    def __init__(
        self, config: ServerConfig, reread: Callable[[], dict[str, object]] | None = None
    ) -> None:
        self.config = config
        self._reread = reread
        self._held: socket.socket | None = None
        self.address: tuple[str, int] = (config.host, config.port)
        self.workers: list[Worker] = []
        self._stopping: str | None = None
        self._stop_deadline = 0.0
        self._failed: str | None = None  # a first start failed: give up

    def bind(self) -> tuple[str, int]:
        """Reserve the port (``--port 0`` picks one) and prepare each worker's settings."""
        self._held = reserve_port(self.config.host, self.config.port)
        port = int(self._held.getsockname()[1])
        self.address = (self.config.host, port)
        self.workers = [
            Worker(k, worker_config(self.config, k, port)) for k in range(self.config.workers)
        ]
        return self.address

    def run(self) -> int:
        """Start the workers and supervise them until they have all stopped; the exit code."""
        if self._held is None:
            self.bind()
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)
        try:
            # (Each worker logs its own "listening on" once it accepts.)
            log.info(
                "port %s held for %d workers (supervisor pid %d)",
                Address(*self.address),
                len(self.workers),
                os.getpid(),
            )
            for worker in self.workers:
                self._start(worker)
            while self._alive() or self._stopping is None:
                self._wait(self._timeout())
                self._reap()
                self._restart_due()
                if self._stopping is not None and time.monotonic() >= self._stop_deadline:
                    self._kill_remaining()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            if self._held is not None:
                self._held.close()
                self._held = None
        if self._failed is not None:
            from mtlschat.net.server import StartupError

            raise StartupError(self._failed)
        log.info("all workers stopped (%s)", self._stopping)
        return 0

    # -- the loop ----------------------------------------------------------------------------

    def _alive(self) -> list[Worker]:
        return [w for w in self.workers if w.pid is not None]

    def _timeout(self) -> float:
        now = time.monotonic()
        if self._stopping is not None:
            return max(0.0, self._stop_deadline - now)
        due = [w.restart_at for w in self.workers if w.restart_at is not None]
        return max(0.0, min(due) - now) if due else 3600.0

    def _wait(self, timeout: float) -> None:
        info = signal.sigtimedwait(_WAITED, timeout)
        while info is not None:
            self._on_signal(signal.Signals(info.si_signo))
            info = signal.sigtimedwait(_WAITED, 0)  # others that came meanwhile

    def _on_signal(self, signum: signal.Signals) -> None:
        if signum == signal.SIGCHLD:
            return  # _reap looks at every worker after each wait
        if signum in (signal.SIGTERM, signal.SIGINT) and self._stopping is None:
            self._stop(signum.name)
        for worker in self._alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid or 0, signum)
        if signum == signal.SIGHUP:
            log.info("SIGHUP: passed on to %d workers", len(self._alive()))

    def _stop(self, why: str) -> None:
        self._stopping = why
        self._stop_deadline = time.monotonic() + STOP_TIMEOUT
        for worker in self.workers:
            worker.restart_at = None
        log.info("%s: stopping %d workers", why, len(self._alive()))

    def _start(self, worker: Worker) -> None:
        assert self._held is not None
        worker.restart_at = None
        worker.runs += 1
        worker.started = time.monotonic()
        for handler in logging.getLogger().handlers:
            handler.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 1
            try:
                code = _run_worker(worker, self._reread, self._held)
            finally:
                logging.shutdown()
                os._exit(code)
        worker.pid = pid
        log.info("worker %s started (pid %d)", worker.node, pid)

    def _reap(self) -> None:
        by_pid = {w.pid: w for w in self._alive()}
        while by_pid:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = by_pid.pop(pid, None)
            if worker is not None:
                self._exited(worker, status)

    def _exited(self, worker: Worker, status: int) -> None:
        pid, worker.pid = worker.pid, None
        code = os.waitstatus_to_exitcode(status)
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if self._stopping is not None:
            log.info("worker %s stopped (%s)", worker.node, how)
            return
        if code == EX_STARTUP and worker.runs == 1:
            # Its first start failed (the worker logged why): the others will fail alike.
            self._failed = f"worker {worker.node} could not start (see above)"
            self._stop("a worker could not start")
            for other in self._alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(other.pid or 0, signal.SIGTERM)
            return
        ran = time.monotonic() - worker.started
        if ran >= STABLE:
            worker.backoff.reset()
        delay = 0.0 if ran >= STABLE else worker.backoff.next()
        worker.restart_at = time.monotonic() + delay
        log.warning(
            "worker %s (pid %d) died after %.1fs: %s; restarting it in %.1fs",
            worker.node,
            pid,
            ran,
            how,
            delay,
        )

    def _restart_due(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            due = worker.restart_at is not None and worker.restart_at <= now
            if due and self._stopping is None:
                self._start(worker)

    def _kill_remaining(self) -> None:
        for worker in self._alive():
            log.warning("worker %s did not stop in %.0fs: killing it", worker.node, STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid or 0, signal.SIGKILL)
        self._stop_deadline = time.monotonic() + STOP_TIMEOUT


def run_workers(config: ServerConfig, reread: Callable[[], dict[str, object]] | None) -> None:
    """Run ``mtlschat server --workers N`` in this (main) thread until SIGINT/SIGTERM; with
    ``--pidfile``, the supervisor's PID is written once the port is reserved."""
    from mtlschat.net.server import write_pidfile

    supervisor = Supervisor(config, reread)
    supervisor.bind()
    with contextlib.ExitStack() as stack:
        if config.pidfile is not None:
            stack.enter_context(write_pidfile(config.pidfile))
        supervisor.run()
