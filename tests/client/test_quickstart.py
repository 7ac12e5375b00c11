"""scripts/quickstart.sh (the README's first command), minus the venv/pip step.

The script runs in a scratch copy of the repository layout where ``scripts/setup.sh`` is a stub and
``.venv/bin/mtlschat`` runs this interpreter's mtlschat, so the test needs no network. The
install step itself is proven by running the script in a clean clone (see the report).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mtlschat.client.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _scratch_repo(tmp: Path) -> Path:
    repo = tmp / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "quickstart.sh", repo / "scripts" / "quickstart.sh")
    stub = repo / "scripts" / "setup.sh"
    # A stub (the environment is the test's own) that records how it was called.
    stub.write_text('#!/bin/sh\necho "setup.sh $*" >> "$(dirname "$0")/setup.calls"\n')
    stub.chmod(0o755)
    bindir = repo / ".venv" / "bin"
    bindir.mkdir(parents=True)
    shim = bindir / "mtlschat"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m mtlschat "$@"\n')
    shim.chmod(0o755)
    return repo


def _start(repo: Path, env: dict[str, str], out: Path, err: Path) -> subprocess.Popen[bytes]:
    """Run the script (its server on 127.0.0.1 only, its default) and wait until it listens.

    The port is picked free, let go, then bound by the server: another process can take it in
    between, so a start that fails with "Address already in use" is retried on a new port
    (``env["MTLSCHAT_PORT"]`` says which one the server took).
    """
    for _ in range(5):
        env["MTLSCHAT_PORT"] = str(_free_port())
        with out.open("wb") as out_file, err.open("wb") as err_file:
            proc = subprocess.Popen(
                [str(repo / "scripts" / "quickstart.sh")],
                stdout=out_file,
                stderr=err_file,
                env=env,
                start_new_session=True,  # so SIGINT reaches the server the script exec'd
            )
        deadline = time.monotonic() + DEADLINE
        while "listening on" not in err.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                if "Address already in use" in err.read_text():
                    break
                raise AssertionError(f"no server:\n{out.read_text()}\n{err.read_text()}")
            time.sleep(0.05)
        else:
            return proc
    raise AssertionError(f"no free port in 5 tries:\n{err.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(DEADLINE)


def test_quickstart_makes_a_pki_runs_a_server_and_prints_a_working_command(tmp_path: Path) -> None:
    repo = _scratch_repo(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSCHAT_")}
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    proc = _start(repo, env, out_path, err_path)
    port = env["MTLSCHAT_PORT"]
    try:
        printed = out_path.read_text()
        match = re.search(r"^\s*(cd .* && \.venv/bin/mtlschat client .*)$", printed, re.M)
        assert match is not None, printed
        command = match.group(1)
        assert command.endswith(f"--cert pki/users/alice.pem localhost:{port}")
        # The demo listens on loopback only, and says how to open it up.
        assert f"listening on 127.0.0.1:{port}" in err_path.read_text()
        assert "It listens on 127.0.0.1 only" in printed
        assert "scripts/quickstart.sh --host 0.0.0.0" in printed
        # It installs what running needs only (scripts/test.sh installs the dev tools).
        calls = (repo / "scripts" / "setup.calls").read_text().splitlines()
        assert set(calls) == {"setup.sh --runtime"}, calls  # (once per start, retries included)
        for name in ("ca.crt", "ca.key", "server.pem", "users/alice.pem", "users/bob.pem"):
            assert (repo / "pki" / name).is_file(), name
        assert (repo / "pki" / "users" / "alice.pem").stat().st_mode & 0o077 == 0

        # The exact printed command joins the room (pipe mode: stdin is not a terminal).
        joined = subprocess.run(
            ["sh", "-c", command],
            input="",
            capture_output=True,
            text=True,
            env=env,
            timeout=DEADLINE,
            check=False,
        )
        assert joined.returncode == ExitCode.OK, joined.stderr
        assert "* welcome alice. online: alice" in joined.stdout
    finally:
        assert _stop(proc) == 0

    # Run again: the PKI is kept, nothing is reissued.
    ca_before = (repo / "pki" / "ca.crt").read_bytes()
    assert _stop(_start(repo, env, out_path, err_path)) == 0
    assert (repo / "pki" / "ca.crt").read_bytes() == ca_before
    assert "creating a demo CA" not in out_path.read_text()

    # A lost bundle whose certificate is still valid is renewed (the lost one revoked).
    (repo / "pki" / "users" / "bob.pem").unlink()
    assert _stop(_start(repo, env, out_path, err_path)) == 0
    assert (repo / "pki" / "users" / "bob.pem").is_file()
    assert (repo / "pki" / "ca.crt").read_bytes() == ca_before


def _fake_venv(tmp: Path) -> tuple[Path, Path]:
    """A copy of scripts/setup.sh in a repository whose .venv python only logs its arguments."""
    repo = tmp / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    (repo / "pyproject.toml").write_text("")
    python = repo / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    log = tmp / "pip.log"
    python.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\n')
    python.chmod(0o755)
    return repo, log


def test_setup_installs_the_dev_tools_only_when_asked(tmp_path: Path) -> None:
    repo, log = _fake_venv(tmp_path)
    setup = [str(repo / "scripts" / "setup.sh")]
    subprocess.run([*setup, "--runtime"], check=True, timeout=DEADLINE)
    assert log.read_text().splitlines()[-1] == f"-m pip install --quiet -e {repo}"
    subprocess.run([*setup, "--runtime"], check=True, timeout=DEADLINE)  # done: nothing to do
    assert len(log.read_text().splitlines()) == 2
    subprocess.run(setup, check=True, timeout=DEADLINE)  # the test command's: dev + bench
    assert log.read_text().splitlines()[-1] == f"-m pip install --quiet -e {repo}[dev,bench]"
    subprocess.run([*setup, "--runtime"], check=True, timeout=DEADLINE)  # covered by the full one
    assert len(log.read_text().splitlines()) == 4
