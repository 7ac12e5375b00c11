"""``mtlschat ca`` through the real CLI, checked with the real ``openssl`` and ``keytool``.

The end-to-end workflow and the concurrency test run real processes (``python -m mtlschat``);
the long list of bad inputs runs the same typer app in-process (CliRunner) to stay fast, with a
few of them repeated as real processes to prove the entry point prints no traceback either.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from mtlschat.ca.bundle import load_bundle
from mtlschat.ca.crl import load_verified_crl, revoked_in
from mtlschat.cli.main import app

if TYPE_CHECKING:  # conftest is not importable at run time (--import-mode=importlib)
    from conftest import CLIRunner

Run = Callable[..., "subprocess.CompletedProcess[str]"]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], match: str, code: int = 1) -> None:
    """A user mistake: exit ``code``, exactly one line on stderr, no traceback."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mtlschat: error: ")
    assert match in lines[0], lines[0]


def tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run openssl / keytool."""
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=60
    )


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run the typer app in-process, in tmp_path, with a clean MTLSCHAT_* environment."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("MTLSCHAT_"):
            monkeypatch.delenv(key)

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = CliRunner().invoke(app, list(args), env=env)
        # Anything but a clean exit (typer.Exit / usage error) is a bug: show its traceback.
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return subprocess.CompletedProcess(
            list(args), result.exit_code, result.stdout, result.stderr
        )

    return run


@pytest.mark.slow
def test_workflow_with_openssl_and_keytool(
    tmp_path: Path, mtlschat_cli: CLIRunner, openssl: str, keytool: str
) -> None:
    """init -> issue -> server -> list -> export/truststore -> renew -> revoke -> crl -> show."""
    env = {"MTLSCHAT_P12_PASSWORD": "changeit"}
    run = lambda *a: mtlschat_cli(*a, cwd=tmp_path, env=env)  # noqa: E731
    pki = tmp_path / "pki"
    assert "Acme Chat CA" in ok(run("ca", "init", "--name", "Acme Chat CA"))
    ok(run("ca", "issue", "alice"))
    alice = tmp_path / "alice.pem"
    assert stat.S_IMODE(alice.stat().st_mode) == 0o600
    ok(run("ca", "issue", "--server", "localhost", "127.0.0.1", "::1"))

    verify = (openssl, "verify", "-CAfile", pki / "ca.crt")
    assert tool(*verify, "-purpose", "sslclient", alice).returncode == 0
    assert tool(*verify, "-purpose", "sslserver", pki / "server.pem").returncode == 0
    assert tool(*verify, "-purpose", "sslserver", alice).returncode != 0  # clientAuth only

    rows = json.loads(ok(run("ca", "list", "--json")))
    assert [(r["name"], r["kind"], r["status"]) for r in rows] == [
        ("alice", "user", "valid"),
        ("localhost", "server", "valid"),
    ]

    # keytool's workflow, replaced: the keystore (genkey) and the truststore (export + import)
    (tmp_path / "pw.txt").write_text("s3cret-pw\n")
    ok(run("ca", "export", "alice", "--format", "p12", "--password-file", "pw.txt"))
    ok(run("ca", "truststore", "--out", "myTrustStore.p12"))
    keytool_list = (keytool, "-list", "-storetype", "PKCS12", "-keystore")
    listing = tool(*keytool_list, tmp_path / "alice.p12", "-storepass", "s3cret-pw")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "PrivateKeyEntry" in listing.stdout and "alice" in listing.stdout
    listing = tool(*keytool_list, tmp_path / "myTrustStore.p12", "-storepass", "changeit")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "trustedCertEntry" in listing.stdout
    p12 = tool(
        openssl,
        "pkcs12",
        "-in",
        tmp_path / "alice.p12",
        "-passin",
        "pass:s3cret-pw",
        "-nokeys",
        "-info",
    )
    assert p12.returncode == 0 and p12.stdout.count("BEGIN CERTIFICATE") == 2, p12.stderr

    assert "still valid" in ok(run("ca", "renew", "alice", "--out", "alice2.pem"))
    ok(run("ca", "revoke", "alice", "--reason", "key-compromise"))
    statuses = [r["status"] for r in json.loads(ok(run("ca", "list", "--json")))]
    assert statuses.count("revoked") == 2  # both of alice's certificates
    assert load_bundle(alice).cert.serial_number in revoked_in(load_verified_crl(pki / "crl.pem"))
    ok(run("ca", "crl", "--days", "7"))
    crl_check = (*verify, "-crl_check", "-CRLfile", pki / "crl.pem")
    revoked = tool(*crl_check, "-purpose", "sslclient", alice)
    assert revoked.returncode != 0 and "revoked" in revoked.stdout + revoked.stderr
    assert tool(*crl_check, "-purpose", "sslserver", pki / "server.pem").returncode == 0

    shown = ok(run("ca", "show", "alice2.pem"))
    for expected in ("CN=alice", "CN=Acme Chat CA", "EC P-256", "sha256 fingerprint", "clientAuth"):
        assert expected in shown


def test_issue_rules(tmp_path: Path, cli: Run) -> None:
    ok(cli("ca", "init"))
    ok(cli("ca", "issue", "alice"))
    fails(cli("ca", "issue", "alice", "--out", "other.pem"), "already has a valid certificate")
    fails(cli("ca", "issue", "ALICE", "--out", "other.pem"), "already has a valid certificate")
    fails(cli("ca", "issue", "bob", "--out", "alice.pem"), "already exists")
    assert not (tmp_path / "other.pem").exists()
    ok(cli("ca", "issue", "--server", "localhost"))
    fails(cli("ca", "issue", "--server", "localhost"), "already exists")
    ok(cli("ca", "issue", "--server", "chat.example.org", "--force", "--days", "30"))
    shown = json.loads(ok(cli("ca", "show", "--json", "pki/server.pem")))
    assert shown[1]["subject alt names"] == "DNS:chat.example.org"
    ok(cli("ca", "revoke", "--server", "localhost"))
    table = ok(cli("ca", "list"))
    assert "alice" in table and "revoked" in table
    assert "CRL number" in ok(cli("ca", "show", "pki/crl.pem"))


def test_pki_env_and_passphrases(tmp_path: Path, cli: Run) -> None:
    env = {"MTLSCHAT_PKI": str(tmp_path / "secure"), "MTLSCHAT_CA_PASSPHRASE": "correct horse"}
    ok(cli("ca", "init", env=env))
    assert b"ENCRYPTED" in (tmp_path / "secure" / "ca.key").read_bytes()
    no_pass = {"MTLSCHAT_PKI": env["MTLSCHAT_PKI"]}
    fails(cli("ca", "issue", "bob", env=no_pass), "MTLSCHAT_CA_PASSPHRASE")
    wrong = {**no_pass, "MTLSCHAT_CA_PASSPHRASE": "battery staple"}
    fails(cli("ca", "issue", "bob", env=wrong), "wrong passphrase")
    assert not (tmp_path / "bob.pem").exists()
    ok(cli("ca", "list", env=no_pass))  # listing needs no passphrase
    bundle_env = {**env, "MTLSCHAT_BUNDLE_PASSPHRASE": "bundle-pw"}
    ok(cli("ca", "issue", "bob", "--encrypt", env=bundle_env))
    assert load_bundle(tmp_path / "bob.pem", b"bundle-pw").encrypted
    fails(cli("ca", "issue", "carol", "--encrypt", env=env), "MTLSCHAT_BUNDLE_PASSPHRASE")
    # exporting an encrypted bundle needs its passphrase, then a p12 password
    fails(cli("ca", "export", "bob", env={"MTLSCHAT_P12_PASSWORD": "123456"}), "encrypted")
    fails(cli("ca", "export", "bob", env={"MTLSCHAT_P12_PASSWORD": "12345", **bundle_env}), "6")
    ok(cli("ca", "export", "bob", env={"MTLSCHAT_P12_PASSWORD": "123456", **bundle_env}))
    fails(
        cli("ca", "truststore", env=no_pass), "PKCS#12 password needed: set MTLSCHAT_P12_PASSWORD"
    )


def test_sign_csr(tmp_path: Path, cli: Run) -> None:
    ok(cli("ca", "init"))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kim")])
    good = x509.CertificateSigningRequestBuilder().subject_name(subject)
    (tmp_path / "kim.csr").write_bytes(
        good.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    evil = good.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    (tmp_path / "evil.csr").write_bytes(
        evil.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    )
    fails(cli("ca", "sign", "evil.csr"), "CA powers")
    ok(cli("ca", "sign", "kim.csr"))
    cert = x509.load_pem_x509_certificates((tmp_path / "kim.crt").read_bytes())[0]
    assert cert.public_key() == key.public_key()


def test_error_paths_as_processes(tmp_path: Path, mtlschat_cli: CLIRunner) -> None:
    run = lambda *a: mtlschat_cli(*a, cwd=tmp_path)  # noqa: E731
    fails(run("ca", "issue", "alice"), "no CA in pki")
    ok(run("ca", "init"))
    fails(run("ca", "init"), "already exists")
    fails(run("ca", "issue", "bad name"), "invalid username")
    fails(run("ca", "show", "missing.pem"), "not found")


def test_days_past_year_9999_is_one_line_error(tmp_path: Path, mtlschat_cli: CLIRunner) -> None:
    run = lambda *a: mtlschat_cli(*a, cwd=tmp_path)  # noqa: E731
    fails(run("ca", "init", "--days", "99999999"), "too large")
    assert not (tmp_path / "pki" / "ca.key").exists()
    ok(run("ca", "init"))
    crl = (tmp_path / "pki" / "crl.pem").read_bytes()
    fails(run("ca", "crl", "--days", "99999999"), "too long")
    fails(run("ca", "init", "--force", "--days", "99999999"), "too large")
    assert (tmp_path / "pki" / "crl.pem").read_bytes() == crl  # nothing replaced


def test_error_paths(tmp_path: Path, cli: Run) -> None:
    fails(cli("ca", "issue", "alice"), "no CA in pki")
    fails(cli("ca", "list", "--pki", "nowhere"), "no CA in nowhere")
    ok(cli("ca", "init"))
    fails(cli("ca", "init"), "already exists")
    old_key = (tmp_path / "pki" / "ca.key").read_bytes()
    replaced = ok(cli("ca", "init", "--force"))
    [backup] = (tmp_path / "pki").glob("backup-*")
    assert f"moved the previous CA (certificate, key, record, CRL) to pki/{backup.name}" in replaced
    assert (backup / "ca.key").read_bytes() == old_key
    fails(cli("ca", "issue", "bad name"), "invalid username")
    fails(cli("ca", "issue", "--", "-dash"), "invalid username")
    fails(cli("ca", "issue", "alice", "bob"), "exactly one username")
    fails(cli("ca", "issue", "--server", "h", "--days", "5000"), "at most 397")
    fails(cli("ca", "issue", "--server", "not a host"), "invalid host")
    fails(cli("ca", "revoke", "ghost"), "no unrevoked")
    fails(cli("ca", "revoke"), "give a NAME, --serial or --cert (see mtlschat ca revoke -h)")
    fails(cli("ca", "revoke", "x", "--serial", "ab"), "give one of NAME, --serial or --cert, not")
    fails(cli("ca", "revoke", "--serial", "xyz"), "not a hex number")
    unknown = cli("ca", "revoke", "--serial", "abc123")  # not in ca.db: listed all the same
    assert unknown.returncode == 0 and "not in pki/ca.db" in unknown.stderr
    fails(cli("ca", "revoke", "--serial", "abc123"), "already revoked")
    fails(cli("ca", "crl", "--days", "0"), "at least 1 day")
    fails(cli("ca", "show", "missing.pem"), "not found")
    fails(cli("ca", "show", "pki"), "directory")
    (tmp_path / "notes.txt").write_text("just text\n")
    fails(cli("ca", "show", "notes.txt"), "holds no certificate")
    fails(cli("ca", "sign", "notes.txt"), "not a certificate signing request")
    fails(cli("ca", "sign", "missing.csr"), "not found")
    fails(cli("ca", "export", "pki/ca.crt"), "holds no private key")
    fails(cli("ca", "export", "nobody"), "not found")
    fails(cli("ca", "renew", "nobody"), "no unrevoked certificate")
    fails(cli("ca", "truststore", "--password-file", "missing.txt"), "not found")
    fails(cli("ca", "issue", "bob", "--out", "nodir/bob.pem"), "does not exist")
    assert "bob" not in ok(cli("ca", "list"))  # nothing recorded for the failed write
    (tmp_path / "pki" / "ca.key").unlink()
    fails(cli("ca", "crl"), "CA key pki/ca.key not found")
    (tmp_path / "pki" / "ca.db").write_text("garbage")
    fails(cli("ca", "list"), "not a database")
    (tmp_path / "pki" / "ca.crt").write_text("garbage")
    fails(cli("ca", "list"), "not a PEM certificate")
    # typer's own usage errors keep exit code 2
    assert cli("ca", "init", "--key-type", "dsa").returncode == 2
    assert cli("ca", "revoke", "x", "--reason", "bored").returncode == 2


def test_concurrent_issue(tmp_path: Path, cli: Run) -> None:
    """`ca issue` processes started at once all finish cleanly, with distinct serials."""
    ok(cli("ca", "init"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSCHAT_")}
    names = ["para", "llel", "same", "same"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mtlschat", "ca", "issue", name, "--out", f"{i}.pem"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, name in enumerate(names)
    ]
    results = [(p.wait(timeout=60), p.communicate()[1]) for p in procs]
    assert [code for code, _ in results[:2]] == [0, 0], results
    # The same name raced twice: exactly one wins, the other gets a clean error.
    assert sorted(code for code, _ in results[2:]) == [0, 1], results
    assert "already has a valid certificate" in "".join(err for _, err in results[2:])
    assert "Traceback" not in "".join(err for _, err in results)
    rows = json.loads(ok(cli("ca", "list", "--json")))
    assert sorted(r["name"] for r in rows) == ["llel", "para", "same"]
    assert len({r["serial"] for r in rows}) == 3


def test_keytool_requests(tmp_path: Path, mtlschat_cli: CLIRunner, keytool: str) -> None:
    """A keytool CSR with its default distinguished name is refused in one line with the
    ``-dname`` hint (no library warning leaks); with ``-dname "CN=bob"`` it is signed, and
    keytool takes the reply back into its keystore."""
    run = lambda *a: mtlschat_cli(*a, cwd=tmp_path)  # noqa: E731
    ok(run("ca", "init"))
    store = ("-keystore", str(tmp_path / "k.p12"), "-storepass", "changeit", "-storetype", "PKCS12")
    # keytool's prompts answered with Enter: every field "Unknown", then "yes".
    made = subprocess.run(
        [keytool, "-genkeypair", "-alias", "anon", "-keyalg", "EC", *store],
        input="\n" * 6 + "yes\n",
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0 and "OU=Unknown" in made.stdout + made.stderr, made.stderr
    req = [keytool, "-certreq", *store, "-alias"]
    assert tool(*req, "anon", "-file", tmp_path / "anon.csr").returncode == 0
    refused = run("ca", "sign", "anon.csr")
    fails(refused, "keytool's default distinguished name")
    assert '-dname "CN=<your name>"' in refused.stderr and "Warning" not in refused.stderr
    gen = [keytool, "-genkeypair", "-keyalg", "EC", *store, "-alias", "bob"]
    assert tool(*gen, "-dname", "CN=bob, OU=Unknown, O=Unknown, C=Unknown").returncode == 0
    assert tool(*req, "bob", "-file", tmp_path / "bob-dn.csr").returncode == 0
    fails(run("ca", "sign", "bob-dn.csr"), '-dname "CN=bob"')
    assert tool(keytool, "-delete", *store, "-alias", "bob").returncode == 0
    assert tool(*gen, "-dname", "CN=bob").returncode == 0
    assert tool(*req, "bob", "-file", tmp_path / "bob.csr").returncode == 0
    ok(run("ca", "sign", "bob.csr"))
    imported = tool(
        keytool, "-importcert", "-noprompt", "-trustcacerts", *store, "-alias", "bob",
        "-file", tmp_path / "bob.crt",
    )  # fmt: skip
    assert imported.returncode == 0, imported.stdout + imported.stderr
    listing = tool(keytool, "-list", "-v", *store, "-alias", "bob")
    assert "Certificate chain length: 2" in listing.stdout, listing.stdout


def test_show_reads_pkcs12(tmp_path: Path, cli: Run) -> None:
    env = {"MTLSCHAT_P12_PASSWORD": "changeit"}
    ok(cli("ca", "init", "--name", "Show CA"))
    ok(cli("ca", "issue", "quinn"))
    ok(cli("ca", "export", "quinn", env=env))
    ok(cli("ca", "truststore", env=env))
    shown = json.loads(ok(cli("ca", "show", "--json", "quinn.p12", env=env)))
    assert [s["type"] for s in shown] == ["private key", "certificate", "chain"]
    assert shown[1]["alias"] == "quinn" and shown[1]["subject"] == "CN=quinn"
    assert shown[2]["subject"] == "CN=Show CA"
    shown = json.loads(ok(cli("ca", "show", "--json", "truststore.p12", env=env)))
    assert [(s["type"], s["alias"]) for s in shown] == [("trusted certificate", "mtlschat-ca")]
    fails(cli("ca", "show", "quinn.p12"), "PKCS#12 password needed")
    fails(cli("ca", "show", "quinn.p12", env={"MTLSCHAT_P12_PASSWORD": "nope-nope"}), "wrong")
    (tmp_path / "pw").write_text("changeit\n")
    assert "CN=quinn" in ok(cli("ca", "show", "quinn.p12", "--password-file", "pw"))


def test_validity_durations(tmp_path: Path, cli: Run) -> None:
    ok(cli("ca", "init"))

    def lifetime(path: str) -> float:
        cert = load_bundle(tmp_path / path).cert
        return (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400

    ok(cli("ca", "issue", "rita", "--valid", "8760h"))
    assert lifetime("rita.pem") == 365
    ok(cli("ca", "issue", "sam", "--valid", "2y"))
    assert lifetime("sam.pem") == 730  # a member may live longer than 397 days
    ok(cli("ca", "issue", "tess", "--days", "1000"))
    assert lifetime("tess.pem") == 1000
    ok(cli("ca", "issue", "--server", "localhost", "--valid", "90d"))
    assert lifetime("pki/server.pem") == 90
    fails(cli("ca", "issue", "--server", "h", "--days", "398", "--force"), "at most 397 days")
    fails(cli("ca", "issue", "uma", "--valid", "30m"), "invalid validity")
    fails(cli("ca", "issue", "uma", "--valid", "0h"), "at least 1 hour")
    fails(cli("ca", "issue", "uma", "--days", "5", "--valid", "5d"), "not both")


def test_list_marks_expiry_and_crl_if_due(tmp_path: Path, cli: Run) -> None:
    ok(cli("ca", "init"))
    ok(cli("ca", "issue", "vera", "--days", "10"))
    ok(cli("ca", "issue", "walt"))
    listed = ok(cli("ca", "list"))
    [vera] = [line for line in listed.splitlines() if "vera" in line]
    [walt] = [line for line in listed.splitlines() if "walt" in line]
    assert "valid (expires soon)" in vera and "expires soon" not in walt
    assert "pki/crl.pem: CRL number 1, 0 revoked, next update" in listed
    assert "expires soon" not in listed.splitlines()[-1]
    assert "not due (--if-due 30)" in ok(cli("ca", "crl", "--if-due", "30"))  # 180 days away
    ok(cli("ca", "crl", "--days", "10"))  # CRL 2, nextUpdate in 10 days
    assert "(expires soon: run `mtlschat ca crl`)" in ok(cli("ca", "list")).splitlines()[-1]
    assert "wrote pki/crl.pem" in ok(cli("ca", "crl", "--if-due", "30"))
    last = ok(cli("ca", "list")).splitlines()[-1]
    assert "CRL number 3" in last and "expires soon" not in last
    fails(cli("ca", "crl", "--if-due", "-1"), "--if-due must be 0 or more")
