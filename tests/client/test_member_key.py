"""The member's own key, end to end with real processes: `mtlschat request` on the member's
side, `mtlschat ca sign` on the operator's, `mtlschat bundle` to join them, then the client
joins the room with it (docs/certificates.md, "Your own key")."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlschat.ca.bundle import load_bundle

if TYPE_CHECKING:  # conftest is not importable at run time (--import-mode=importlib)
    from conftest import CLIRunner, TestPKI


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # nothing leaks (library warnings, tracebacks)
    return result.stdout


def test_request_sign_bundle_and_join(
    fresh_pki: TestPKI,
    tmp_path: Path,
    mtlschat_cli: CLIRunner,
    spawn_server: Any,
    spawn_client: Any,
    openssl: str,
) -> None:
    member = tmp_path / "member"
    member.mkdir()
    env = {"MTLSCHAT_BUNDLE_PASSPHRASE": "own-key-pw"}
    said = ok(mtlschat_cli("request", "nora", "--encrypt", cwd=member, env=env))
    assert "mtlschat ca sign nora.csr" in said and "mtlschat bundle nora.key nora.crt" in said
    key = member / "nora.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    # The operator sees only the CSR and returns the certificate.
    crt = tmp_path / "nora.crt"
    ok(mtlschat_cli("ca", "sign", member / "nora.csr", "--pki", fresh_pki.dir, "-o", crt))
    (member / "nora.crt").write_bytes(crt.read_bytes())
    joined = ok(mtlschat_cli("bundle", "nora.key", "nora.crt", cwd=member, env=env))
    bundle = member / "nora.pem"
    assert f"mtlschat client --cert {bundle.name}" in joined
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    loaded = load_bundle(bundle, b"own-key-pw")
    assert loaded.encrypted and loaded.name == "nora" and loaded.chain == [fresh_pki.ca.cert]
    verify = [openssl, "verify", "-CAfile", fresh_pki.ca_cert, "-purpose", "sslclient", bundle]
    assert subprocess.run(verify, capture_output=True, check=False).returncode == 0

    server = spawn_server(fresh_pki.dir)
    nora = spawn_client("--cert", bundle, f"localhost:{server.port}", env=env)
    nora.wait_out("* welcome nora.")


def test_bundle_refusals(fresh_pki: TestPKI, tmp_path: Path, mtlschat_cli: CLIRunner) -> None:
    run = lambda *a: mtlschat_cli(*a, cwd=tmp_path)  # noqa: E731
    ok(run("request", "olga"))
    ok(run("request", "pete"))
    ok(run("ca", "sign", "olga.csr", "--pki", fresh_pki.dir))
    cert_only = tmp_path / "cert-only.crt"
    end = b"-----END CERTIFICATE-----"
    cert_only.write_bytes((tmp_path / "olga.crt").read_bytes().split(end)[0] + end + b"\n")
    for args, message in [
        (("bundle", "pete.key", "olga.crt"), "does not match the certificate"),
        (("bundle", "olga.key", cert_only), "holds no CA certificate: add --ca"),
        (("request", "olga"), "already exists"),
        (("request", "bad name"), "invalid username"),
    ]:
        result = run(*args)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    ok(run("bundle", "olga.key", cert_only, "--ca", fresh_pki.ca_cert, "-o", "olga2.pem"))
    assert load_bundle(tmp_path / "olga2.pem").chain == [fresh_pki.ca.cert]
