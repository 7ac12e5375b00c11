"""``mtlschat bench`` against a live room: a real PKI (not the bench's own), a real server with a
real member, the real CLI. Its certificates are marked, valid a day, revoked and their keys
deleted when the run ends, also on Ctrl-C, and after a ``kill -9`` by the next ``ca`` command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509

from mtlschat.bench.pki import BENCH_VALIDITY

from .conftest import ChatClient, client_context

if TYPE_CHECKING:
    from conftest import CLIRunner, ServerProcess, ServerSpawner, TestPKI

DEADLINE = 60.0  # a bench run starts worker processes: slow on two shared cores


def _bench_rows(cli: CLIRunner, pki: Path, *flags: str) -> list[dict[str, object]]:
    out = cli("ca", "list", "--pki", pki, "--json", *flags)
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, object]] = json.loads(out.stdout)
    return rows


def _crl_serials(pki: Path) -> set[str]:
    crl = x509.load_pem_x509_crl((pki / "crl.pem").read_bytes())
    return {f"{r.serial_number:x}" for r in crl}


def _assert_cleaned_up(cli: CLIRunner, pki: Path, count: int) -> None:
    bench = _bench_rows(cli, pki, "--bench")
    assert len(bench) == count and all(r["bench"] for r in bench)
    assert {r["status"] for r in bench} == {"revoked"}
    assert {str(r["serial"]) for r in bench} <= _crl_serials(pki)
    for r in bench:
        valid = datetime.fromisoformat(str(r["not_after"])) - datetime.fromisoformat(
            str(r["not_before"])
        )
        assert valid <= BENCH_VALIDITY + timedelta(minutes=10)  # (+ the clock-skew backdating)
    assert not list((pki / "bench").glob("*.pem"))  # no key left behind
    assert not list((pki / "bench").glob(".run-*"))


def test_bench_in_a_live_room_leaves_nothing_usable(
    fresh_pki: TestPKI, spawn_server: ServerSpawner, mtlschat_cli: CLIRunner
) -> None:
    server = spawn_server(fresh_pki.dir, "--rate", "0")
    alice = ChatClient(server.port, client_context(fresh_pki.user("alice"), fresh_pki.ca_cert))
    alice.wait_for("welcome")
    out = mtlschat_cli(
        "bench", f"127.0.0.1:{server.port}", "--pki", fresh_pki.dir,
        "-w", "burst", "-n", "2", "-m", "20", "--workers", "1", "--json",
        timeout=DEADLINE,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    # What the room's members see: the bench's members join, talk and leave.
    alice.wait_for("join", name="r00000")
    alice.wait_for("msg", **{"from": "s000"})
    alice.wait_for("leave", name="r00000")

    _assert_cleaned_up(mtlschat_cli, fresh_pki.dir, 3)
    members = _bench_rows(mtlschat_cli, fresh_pki.dir)  # the default hides them
    assert [r["name"] for r in members] == ["localhost", "alice"]  # the server, the member
    assert len(_bench_rows(mtlschat_cli, fresh_pki.dir, "--all")) == 5
    shown = mtlschat_cli("ca", "list", "--pki", fresh_pki.dir)
    assert "r00000" not in shown.stdout
    assert "3 bench certificates not shown: --all or --bench shows them" in shown.stdout
    server.wait_log(r"disconnect r00000 ")


def _start_bench(pki: Path, port: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "mtlschat", "bench", f"127.0.0.1:{port}", "--pki", str(pki)]
    cmd += ["-w", "paced", "--rate", "5", "--duration", "60", "-n", "1", "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSCHAT_")}
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


@pytest.mark.slow
def test_bench_interrupted_or_killed_is_cleaned_up(
    fresh_pki: TestPKI, spawn_server: ServerSpawner, mtlschat_cli: CLIRunner
) -> None:
    server = spawn_server(fresh_pki.dir)
    # Ctrl-C (SIGINT to the whole process group, as a terminal sends it) in the middle of a run.
    bench = _start_bench(fresh_pki.dir, server.port)
    try:
        server.wait_log(r"INFO connect s000 ", timeout=DEADLINE)
        os.killpg(bench.pid, signal.SIGINT)
        _, err = bench.communicate(timeout=DEADLINE)
    finally:
        _kill(bench)
    assert bench.returncode == 130
    assert err.strip().splitlines()[-1] == "mtlschat: error: interrupted"
    assert "Traceback" not in err
    _assert_cleaned_up(mtlschat_cli, fresh_pki.dir, 2)

    # kill -9: nothing runs on the way out; the next `ca` command finds the run is over.
    bench = _start_bench(fresh_pki.dir, server.port)
    try:
        _wait_for_second_connect(server)
        os.killpg(bench.pid, signal.SIGKILL)
        bench.wait(DEADLINE)
    finally:
        _kill(bench)
    assert len(list((fresh_pki.dir / "bench").glob("*.pem"))) == 2  # left behind, valid
    listed = mtlschat_cli("ca", "list", "--pki", fresh_pki.dir)
    assert listed.returncode == 0
    assert "revoked 2 certificates of an interrupted `mtlschat bench`" in listed.stderr
    _assert_cleaned_up(mtlschat_cli, fresh_pki.dir, 4)


def _wait_for_second_connect(server: ServerProcess) -> None:
    deadline = time.monotonic() + DEADLINE
    while server.log().count("INFO connect s000 ") < 2:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
