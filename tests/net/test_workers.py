"""``mtlschat server --workers N``: real supervisor and worker processes on one port."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mtlschat.net.config import ServerConfig
from mtlschat.net.workers import shifted_metrics, worker_config

from .conftest import DEADLINE, ChatClient, client_context

if TYPE_CHECKING:
    from conftest import CLIRunner, RedisServer, ServerProcess, TestPKI


def _worker_pids(server: ServerProcess, count: int) -> dict[str, int]:
    """Wait until ``count`` workers run; their pids by node id, as the supervisor logged."""
    deadline = time.monotonic() + DEADLINE
    while True:
        started = dict(re.findall(r"worker (\S+) started \(pid (\d+)\)", server.log()))
        alive = {node: int(pid) for node, pid in started.items()}
        listening = set(re.findall(r"\[(\S+-w\d+)\] listening on", server.log()))
        if len(alive) >= count and len(listening) >= count:
            return alive
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise AssertionError(f"{count} workers did not start:\n{server.log()}")
        time.sleep(0.05)


def _served_by(server: ServerProcess, client: ChatClient, name: str = "alice") -> str:
    """The node id of the worker that logged this client's connection."""
    pattern = rf"\[(\S+)\] connect {name} from 127\.0\.0\.1:{client.sock.getsockname()[1]} "
    server.wait_log(pattern)
    return str(re.findall(pattern, server.log())[-1])  # (the latest: a port can come again)


def _kill_and_wait_restart(server: ServerProcess, node: str, pid: int) -> tuple[float, int]:
    """kill -9 worker ``node``: the delay before its restart (logged), and its new pid."""
    started = rf"worker {node} started \(pid (\d+)\)"
    listening = f"[{node}] listening on"
    before = (len(re.findall(started, server.log())), server.log().count(listening))
    os.kill(pid, signal.SIGKILL)
    line = server.wait_log(rf"worker {node} \(pid {pid}\) died after .*: killed by SIGKILL")
    delay = float(re.findall(r"restarting it in ([\d.]+)s", line)[0])

    def restarted() -> bool:
        log = server.log()
        return len(re.findall(started, log)) > before[0] and log.count(listening) > before[1]

    _wait_for(restarted, server)
    new_pid = int(re.findall(started, server.log())[-1])
    assert _gone(pid) and not _gone(new_pid)
    return delay, new_pid


def _wait_for(condition: Callable[[], bool], server: ServerProcess) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not all(_gone(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {pids}"
        time.sleep(0.05)


def _join(server: ServerProcess, pki: TestPKI, name: str = "alice") -> ChatClient:
    client = ChatClient(server.port, client_context(pki.user(name), pki.ca_cert))
    client.wait_for("welcome", name=name)
    return client


def test_workers_share_the_port_and_are_restarted(
    tmp_path: Path,
    pki: TestPKI,
    spawn_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
) -> None:
    pidfile = tmp_path / "server.pid"
    server = spawn_server(
        pki.dir, "--workers", "2", "--redis", redis_server.url, "--node", "n1",
        "--pidfile", str(pidfile), "--control", str(tmp_path / "ctl.sock"),
        # The same names join again and again until the kernel picks the other worker: more
        # often than a name's join budget allows on one worker (5 at once; it flaked 1 in ~30).
        "--join-rate", "0", "--sessions-per-name", "0",
    )  # fmt: skip
    pids = _worker_pids(server, 2)
    assert set(pids) == {"n1-w0", "n1-w1"}
    assert int(pidfile.read_text()) == server.proc.pid
    controls = [tmp_path / "ctl-w0.sock", tmp_path / "ctl-w1.sock"]  # one per worker
    assert all(path.is_socket() for path in controls)

    # The kernel spreads connections over both workers' sockets (by a hash of the addresses).
    clients, nodes = [], set()
    while len(nodes) < 2:
        assert len(clients) < 40, f"all connections went to {nodes}"
        clients.append(_join(server, pki))
        nodes.add(_served_by(server, clients[-1]))
    # One room over Redis: a line said on one worker reaches a member on the other.
    first = _served_by(server, clients[0])
    bob = _join(server, pki, "bob")
    while _served_by(server, bob, "bob") == first:
        assert len(clients) < 40, "bob never reached the other worker"
        bob.close()
        bob = _join(server, pki, "bob")
    clients[0].send("across the workers")
    assert bob.wait_for("msg", text="across the workers")["from"] == "alice"
    bob.close()

    # kill -9 one: the supervisor starts another in its slot; the port keeps serving meanwhile.
    first_delay, new_pid = _kill_and_wait_restart(server, "n1-w0", pids["n1-w0"])
    clients = [c for c in clients if _served_by(server, c) != "n1-w0"]  # (cut off)
    # Both serve again: connections reach the restarted worker too.
    served: set[str] = set()
    while "n1-w0" not in served:
        assert len(clients) < 80, "the restarted worker gets no connections"
        clients.append(_join(server, pki))
        served.add(_served_by(server, clients[-1]))
    # It keeps dying soon after its start: each restart waits longer (a crash loop backs off).
    second_delay, new_pid = _kill_and_wait_restart(server, "n1-w0", new_pid)
    assert 0 < first_delay < second_delay
    clients = [c for c in clients if _served_by(server, c) != "n1-w0"]

    # SIGTERM to the supervisor: passed on, every worker says bye, all gone, pidfile removed.
    os.kill(server.proc.pid, signal.SIGTERM)
    for client in clients:
        client.wait_for("bye")
    assert server.proc.wait(DEADLINE) == 0
    _wait_gone([pids["n1-w1"], new_pid])
    assert "all workers stopped (SIGTERM)" in server.log()
    assert not pidfile.exists() and not any(path.exists() for path in controls)
    assert "Traceback" not in server.log()


def test_sighup_reaches_every_worker(
    pki: TestPKI, spawn_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = spawn_server(pki.dir, "--workers", "2", "--redis", redis_server.url, "--node", "n2")
    _worker_pids(server, 2)
    os.kill(server.proc.pid, signal.SIGHUP)
    for node in ("n2-w0", "n2-w1"):
        server.wait_log(rf"\[{node}\] reloaded server certificate and CRL")
    assert server.proc.poll() is None


def test_a_worker_that_cannot_start_stops_them_all(
    pki: TestPKI, mtlschat_cli: CLIRunner, redis_server: RedisServer
) -> None:
    # A certificate without its key: the CLI's checks pass, each worker's TLS set-up fails.
    r = mtlschat_cli(
        "server", "--pki", pki.dir, "--port", "0", "--history", "off", "--workers", "2",
        "--redis", redis_server.url, "--cert", pki.ca_cert,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert re.search(r"ERROR \[\S+-w\d\] cannot load server certificate/key", r.stderr)
    assert r.stderr.splitlines()[-1].startswith("mtlschat: error: worker ")
    assert "could not start" in r.stderr and "Traceback" not in r.stderr
    assert "restarting" not in r.stderr


def test_workers_need_redis(pki: TestPKI, mtlschat_cli: CLIRunner) -> None:
    r = mtlschat_cli("server", "--pki", pki.dir, "--port", "0", "--workers", "2")
    assert r.returncode == 1
    assert r.stderr == (
        "mtlschat: error: --workers needs --redis: separate processes would be separate rooms\n"
    )


def test_worker_settings() -> None:
    cfg = ServerConfig(node="box", metrics="9100", workers=3, pidfile=Path("x.pid"))
    second = worker_config(cfg, 2, 7443)
    assert (second.node, second.metrics, second.pidfile, second.workers) == (
        "box-w2",
        "127.0.0.1:9102",
        None,
        1,
    )
    assert second.control == str(Path("pki/control-w2.sock"))  # one control socket each
    assert worker_config(replace(cfg, control="off"), 2, 7443).control == "off"
    assert shifted_metrics("0.0.0.0:0", 5) == "0.0.0.0:0"
    assert shifted_metrics("[::1]:9100", 1) == "[::1]:9101"
    with pytest.raises(ValueError, match="would need port 65536"):
        shifted_metrics("65535", 1)
