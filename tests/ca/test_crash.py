"""kill -9 at the exact instant between two steps of `mtlschat ca ...` (issue 9.3, 9.4, 9.14).

Each test runs the real CLI with ``MTLSCHAT_TEST_PAUSE_AT=<point>`` (see
:mod:`mtlschat.ca.testpoint`): the process says ``paused at <point>`` and waits there; the test
sends SIGKILL and then checks what the next commands find. The invariants: every certificate
that exists anywhere can be revoked, no key is left in a temporary file, a revocation once in
``crl.pem`` is never undone and CRL numbers never repeat, and ``ca init`` is all or nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509

from mtlschat.ca import CertificateAuthority
from mtlschat.ca.bundle import load_bundle
from mtlschat.ca.crl import load_verified_crl, revoked_in
from mtlschat.ca.errors import OutputExists
from mtlschat.ca.fileio import atomic_write

if TYPE_CHECKING:  # conftest is not importable at run time (--import-mode=importlib)
    from conftest import CLIRunner


def kill_at(point: str, cwd: Path, *args: str) -> None:
    """Run ``mtlschat ARGS`` until it reaches ``point``, then SIGKILL it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSCHAT_")}
    env["MTLSCHAT_TEST_PAUSE_AT"] = point
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlschat", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 60)
        line = proc.stderr.readline() if ready else "(timed out)"
        assert line == f"paused at {point}\n", line + proc.stderr.read() if ready else line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def key_files(root: Path) -> list[Path]:
    """Every file under ``root`` holding a private key."""
    return sorted(
        p for p in root.rglob("*") if p.is_file() and b"PRIVATE KEY-----" in p.read_bytes()
    )


def crl_state(pki: Path) -> tuple[int, frozenset[int]]:
    """(CRL number, revoked serials) of pki/crl.pem, its signature checked."""
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    crl = load_verified_crl(pki / "crl.pem", ca_cert)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    return number, revoked_in(crl)


def statuses(cli: CLIRunner, cwd: Path) -> dict[str, list[str]]:
    rows = json.loads(ok(cli("ca", "list", "--json", cwd=cwd)))
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["name"], []).append(r["status"])
    return out


# -- 9.3: issue / sign ---------------------------------------------------------------------------


def test_killed_issue_leaves_a_recorded_revocable_certificate(
    tmp_path: Path, mtlschat_cli: CLIRunner
) -> None:
    ok(mtlschat_cli("ca", "init", cwd=tmp_path))
    kill_at("issue:recorded", tmp_path, "ca", "issue", "alice")
    assert not (tmp_path / "alice.pem").exists()
    assert statuses(mtlschat_cli, tmp_path) == {"alice": ["valid"]}  # recorded before written
    taken = mtlschat_cli("ca", "issue", "alice", cwd=tmp_path)
    assert taken.returncode == 1 and "already has a valid certificate" in taken.stderr
    ok(mtlschat_cli("ca", "revoke", "alice", cwd=tmp_path))
    ok(mtlschat_cli("ca", "issue", "alice", cwd=tmp_path))
    assert statuses(mtlschat_cli, tmp_path) == {"alice": ["revoked", "valid"]}


def test_killed_bundle_write_leaves_no_key_and_the_certificate_recorded(
    tmp_path: Path, mtlschat_cli: CLIRunner
) -> None:
    ok(mtlschat_cli("ca", "init", cwd=tmp_path))
    (tmp_path / "users").mkdir()
    kill_at("write:bob.pem", tmp_path, "ca", "issue", "bob", "--out", "users/bob.pem")
    # The key and certificate were written, fsynced, and about to be named: nothing is left.
    assert key_files(tmp_path / "users") == []
    assert key_files(tmp_path) == [tmp_path / "pki" / "ca.key"]
    assert statuses(mtlschat_cli, tmp_path) == {"bob": ["valid"]}
    # Same with --force over an existing bundle (the write that needs a temporary name).
    ok(mtlschat_cli("ca", "issue", "carol", "--out", "users/carol.pem", cwd=tmp_path))
    before = (tmp_path / "users" / "carol.pem").read_bytes()
    kill_at("write:carol.pem", tmp_path, "ca", "renew", "carol", "-o", "users/carol.pem", "--force")
    assert (tmp_path / "users" / "carol.pem").read_bytes() == before  # old bundle intact
    assert key_files(tmp_path / "users") == [tmp_path / "users" / "carol.pem"]


def test_killed_sign_is_recorded(tmp_path: Path, mtlschat_cli: CLIRunner, openssl: str) -> None:
    ok(mtlschat_cli("ca", "init", cwd=tmp_path))
    req = [openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    made = subprocess.run(
        [*req, "-nodes", "-keyout", "kim.key", "-out", "kim.csr", "-subj", "/CN=kim"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    kill_at("write:kim.crt", tmp_path, "ca", "sign", "kim.csr")
    assert not (tmp_path / "kim.crt").exists()
    assert statuses(mtlschat_cli, tmp_path) == {"kim": ["valid"]}


def test_revoke_a_certificate_the_record_lost(
    tmp_path: Path, mtlschat_cli: CLIRunner, openssl: str
) -> None:
    """Given the file or the serial, any certificate this CA signed can be revoked."""
    ok(mtlschat_cli("ca", "init", cwd=tmp_path))
    ok(mtlschat_cli("ca", "issue", "dave", cwd=tmp_path))
    ok(mtlschat_cli("ca", "issue", "erin", cwd=tmp_path))
    dave = load_bundle(tmp_path / "dave.pem").cert.serial_number
    erin = load_bundle(tmp_path / "erin.pem").cert.serial_number
    with sqlite3.connect(tmp_path / "pki" / "ca.db") as db:  # as if ca.db never held them
        db.execute("DELETE FROM certs")
    assert "no certificates issued yet" in ok(mtlschat_cli("ca", "list", cwd=tmp_path))
    revoked = mtlschat_cli("ca", "revoke", "--cert", "dave.pem", cwd=tmp_path)
    assert "revoked 'dave'" in ok(revoked) and "recorded now" in revoked.stderr
    assert statuses(mtlschat_cli, tmp_path) == {"dave": ["revoked"]}
    revoked = mtlschat_cli("ca", "revoke", "--serial", f"{erin:x}", cwd=tmp_path)
    assert ok(revoked) and "listed in the CRL as given" in revoked.stderr
    assert crl_state(tmp_path / "pki")[1] == {dave, erin}
    verify = [openssl, "verify", "-CAfile", "pki/ca.crt", "-crl_check", "-CRLfile"]
    check = subprocess.run(
        [*verify, "pki/crl.pem", "dave.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode != 0 and "revoked" in check.stdout + check.stderr
    other = tmp_path / "other"
    other.mkdir()
    ok(mtlschat_cli("ca", "init", cwd=other))
    ok(mtlschat_cli("ca", "issue", "mallory", cwd=other))
    foreign = mtlschat_cli("ca", "revoke", "--cert", str(other / "mallory.pem"), cwd=tmp_path)
    assert foreign.returncode == 1 and "no certificate signed by this CA" in foreign.stderr


# -- 9.4: revoke, crl, renew --revoke-old --------------------------------------------------------


@pytest.mark.parametrize("point", ["crl:recorded", "write:crl.pem"])
def test_killed_revoke_is_never_undone(tmp_path: Path, mtlschat_cli: CLIRunner, point: str) -> None:
    pki = tmp_path / "pki"
    ok(mtlschat_cli("ca", "init", cwd=tmp_path))
    ok(mtlschat_cli("ca", "issue", "frank", cwd=tmp_path))
    frank = load_bundle(tmp_path / "frank.pem").cert.serial_number
    number, revoked = crl_state(pki)
    kill_at(point, tmp_path, "ca", "revoke", "frank")
    assert crl_state(pki) == (number, revoked)  # not yet announced: crl.pem untouched
    # Recorded: the next command (any) publishes it, and every later CRL keeps it.
    assert statuses(mtlschat_cli, tmp_path) == {"frank": ["revoked"]}
    assert crl_state(pki) == (number + 1, {frank})
    ok(mtlschat_cli("ca", "crl", cwd=tmp_path))
    assert crl_state(pki) == (number + 2, {frank})
    with sqlite3.connect(pki / "ca.db") as db:
        numbers = [n for (n,) in db.execute("SELECT number FROM crls ORDER BY number")]
    assert numbers == list(range(1, number + 3))  # each number signed once, none reused


def test_crl_numbers_increase_across_kills(tmp_path: Path, mtlschat_cli: CLIRunner) -> None:
    pki = tmp_path / "pki"
    ok(mtlschat_cli("ca", "init", cwd=tmp_path))
    seen = [crl_state(pki)[0]]
    for _ in range(2):
        kill_at("crl:recorded", tmp_path, "ca", "crl")
        ok(mtlschat_cli("ca", "crl", cwd=tmp_path))
        seen.append(crl_state(pki)[0])
    assert seen == [1, 3, 5]  # the killed runs' CRLs (2, 4) were recorded, never reused


def test_killed_renew_revoke_old(tmp_path: Path, mtlschat_cli: CLIRunner) -> None:
    pki = tmp_path / "pki"
    ok(mtlschat_cli("ca", "init", cwd=tmp_path))
    ok(mtlschat_cli("ca", "issue", "gina", cwd=tmp_path))
    old = load_bundle(tmp_path / "gina.pem").cert.serial_number
    # Killed before the new bundle exists: the old certificate is not revoked (no lock-out).
    kill_at("issue:recorded", tmp_path, "ca", "renew", "gina", "--revoke-old", "-o", "g2.pem")
    assert not (tmp_path / "g2.pem").exists()
    assert statuses(mtlschat_cli, tmp_path) == {"gina": ["valid", "valid"]}
    assert old not in crl_state(pki)[1]
    # Killed after the revocation is recorded: it is published by the next command.
    kill_at("crl:recorded", tmp_path, "ca", "renew", "gina", "--revoke-old", "-o", "g3.pem")
    new = load_bundle(tmp_path / "g3.pem").cert.serial_number
    assert old not in crl_state(pki)[1]
    assert sorted(statuses(mtlschat_cli, tmp_path)["gina"]) == ["revoked", "revoked", "valid"]
    assert old in crl_state(pki)[1] and new not in crl_state(pki)[1]


# -- 9.14: init ---------------------------------------------------------------------------------


def test_init_killed_before_its_commit_point_leaves_nothing(
    tmp_path: Path, mtlschat_cli: CLIRunner
) -> None:
    kill_at("init:staged", tmp_path, "ca", "init")
    listed = mtlschat_cli("ca", "list", cwd=tmp_path)
    assert listed.returncode == 1 and "no CA in pki" in listed.stderr
    ok(mtlschat_cli("ca", "init", cwd=tmp_path))  # not "a CA already exists"
    assert key_files(tmp_path) == [tmp_path / "pki" / "ca.key"]  # the staged key is gone
    assert [p.name for p in (tmp_path / "pki").iterdir() if p.name.startswith(".init-")] == []


@pytest.mark.parametrize("point", ["init:committed", "init:moved:ca.key"])
def test_init_killed_after_its_commit_point_is_finished(
    tmp_path: Path, mtlschat_cli: CLIRunner, point: str
) -> None:
    kill_at(point, tmp_path, "ca", "init", "--name", "Killed CA")
    assert "no certificates issued yet" in ok(mtlschat_cli("ca", "list", cwd=tmp_path))
    again = mtlschat_cli("ca", "init", cwd=tmp_path)
    assert again.returncode == 1 and "a CA already exists" in again.stderr
    ok(mtlschat_cli("ca", "issue", "hal", cwd=tmp_path))
    ca = CertificateAuthority.open(tmp_path / "pki")
    assert ca.name == "Killed CA" and ca.unlock().public_key() == ca.cert.public_key()
    assert not (tmp_path / "pki" / ".init-pending").exists()


def test_init_force_killed_midway_keeps_the_old_ca_in_its_backup(
    tmp_path: Path, mtlschat_cli: CLIRunner
) -> None:
    pki = tmp_path / "pki"
    ok(mtlschat_cli("ca", "init", "--name", "Old CA", cwd=tmp_path))
    ok(mtlschat_cli("ca", "issue", "ivy", cwd=tmp_path))
    old_files = {n: (pki / n).read_bytes() for n in ("ca.crt", "ca.key", "crl.pem")}
    kill_at("init:moved:ca.db", tmp_path, "ca", "init", "--force", "--name", "New CA")
    ok(mtlschat_cli("ca", "list", cwd=tmp_path))  # finishes the move
    assert CertificateAuthority.open(pki).name == "New CA"
    [backup] = [p for p in pki.iterdir() if p.name.startswith("backup-")]
    assert {n: (backup / n).read_bytes() for n in old_files} == old_files
    assert [r.name for r in CertificateAuthority.open(backup).records()] == ["ivy"]
    names = {p.name for p in pki.iterdir() if not p.name.startswith(".")}
    assert sorted(names - {"ca.db-wal", "ca.db-shm"}) == [
        backup.name, "ca.crt", "ca.db", "ca.key", "crl.pem"
    ]  # fmt: skip


# -- temporaries --------------------------------------------------------------------------------


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "named-temp"])
def test_stale_temporaries_are_removed_and_live_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    if not unnamed:  # a filesystem without O_TMPFILE: the whole write goes via a named temp
        monkeypatch.delattr(os, "O_TMPFILE")
    stale = tmp_path / ".alice.pem.0badc0de.tmp"  # left by a killed writer: nobody holds it
    stale.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    live = tmp_path / ".alice.pem.12345678.tmp"  # a writer at work holds its flock
    live.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        atomic_write(tmp_path / "alice.pem", b"new", mode=0o600, overwrite=False)
        assert not stale.exists() and live.exists()
    finally:
        os.close(fd)
    with pytest.raises(OutputExists):
        atomic_write(tmp_path / "alice.pem", b"other", overwrite=False)
    atomic_write(tmp_path / "alice.pem", b"replaced", mode=0o600)
    assert (tmp_path / "alice.pem").read_bytes() == b"replaced"
    assert stat.S_IMODE((tmp_path / "alice.pem").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.pem"]  # the live one: gone too


def test_opening_the_ca_removes_stale_temporaries_in_its_directory(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "pki")
    stale = tmp_path / "pki" / ".server.pem.0badc0de.tmp"
    stale.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    CertificateAuthority.open(tmp_path / "pki")
    assert not stale.exists()
