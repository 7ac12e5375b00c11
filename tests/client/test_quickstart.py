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
    stub.write_text("#!/bin/sh\n# stub: the environment is the test's own\n")
    stub.chmod(0o755)
    bindir = repo / ".venv" / "bin"
    bindir.mkdir(parents=True)
    shim = bindir / "mtlschat"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m mtlschat "$@"\n')
    shim.chmod(0o755)
    return repo


def _start(repo: Path, env: dict[str, str], out: Path, err: Path) -> subprocess.Popen[bytes]:
    """Run the script (its server on 127.0.0.1 only) and wait until the server listens."""
    with out.open("wb") as out_file, err.open("wb") as err_file:
        proc = subprocess.Popen(
            [str(repo / "scripts" / "quickstart.sh"), "--host", "127.0.0.1"],
            stdout=out_file,
            stderr=err_file,
            env=env,
            start_new_session=True,  # so SIGINT reaches the server the script exec'd
        )
    deadline = time.monotonic() + DEADLINE
    while "listening on" not in err.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise AssertionError(f"no server:\n{out.read_text()}\n{err.read_text()}")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(DEADLINE)


def test_quickstart_makes_a_pki_runs_a_server_and_prints_a_working_command(tmp_path: Path) -> None:
    repo = _scratch_repo(tmp_path)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSCHAT_")}
    env["MTLSCHAT_PORT"] = str(port)
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    proc = _start(repo, env, out_path, err_path)
    try:
        printed = out_path.read_text()
        match = re.search(r"^\s*(cd .* && \.venv/bin/mtlschat client .*)$", printed, re.M)
        assert match is not None, printed
        command = match.group(1)
        assert command.endswith(f"--cert pki/users/alice.pem localhost:{port}")
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
