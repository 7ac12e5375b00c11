"""Server configuration: flags > env > TOML file > defaults, and one-line errors."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    load_pem_private_key,
)

from mtlschat.ca.crl import build_crl
from mtlschat.net.config import ConfigError, ServerConfig, load_config
from mtlschat.net.tls import revoked_serials

if TYPE_CHECKING:
    from conftest import CLIRunner, TestPKI


def test_defaults() -> None:
    cfg = load_config({}, env={})
    assert cfg == ServerConfig()
    assert (cfg.host, cfg.port, cfg.max_line, cfg.rate, cfg.burst) == ("0.0.0.0", 7443, 2048, 5, 20)
    assert cfg.cert_path == Path("pki/server.pem") and cfg.ca_path == Path("pki/ca.crt")


def test_flags_beat_env_beat_file(tmp_path: Path) -> None:
    toml = tmp_path / "server.toml"
    toml.write_text('port = 1000\nrate = 2.5\nmax-line = 512\nlog_level = "debug"\npki = "/x"\n')
    env = {"MTLSCHAT_PORT": "2000", "MTLSCHAT_BURST": "7", "MTLSCHAT_PKI": "/y"}
    cfg = load_config({"port": 3000, "rate": None}, env=env, config_file=toml)
    assert cfg.port == 3000  # flag
    assert cfg.burst == 7 and cfg.pki == Path("/y")  # env
    assert cfg.rate == 2.5 and cfg.max_line == 512 and cfg.log_level == "DEBUG"  # file
    assert cfg.cert_path == Path("/y/server.pem")
    # MTLSCHAT_CONFIG names the file when --config is not given; a [server] table works too.
    toml.write_text("[server]\nidle-timeout = 30\n")
    assert load_config({}, env={"MTLSCHAT_CONFIG": str(toml)}).idle_timeout == 30


def test_crl_path_found_in_pki_only_if_present(tmp_path: Path) -> None:
    cfg = load_config({"pki": tmp_path}, env={})
    assert cfg.crl_path is None
    (tmp_path / "crl.pem").write_text("x")
    assert cfg.crl_path == tmp_path / "crl.pem"  # looked up again (a SIGHUP picks it up)


@pytest.mark.parametrize(
    ("flags", "env", "toml", "message"),
    [
        ({"port": "x"}, {}, None, "bad value 'x' for port"),
        ({}, {"MTLSCHAT_PORT": "70000"}, None, "a port is 0-65535"),
        ({}, {"MTLSCHAT_RATE": "-1"}, None, "must be >= 0"),
        ({"max_line": 0}, {}, None, "must be at least 1"),
        ({}, {"MTLSCHAT_RATE": "nan"}, None, "must be >= 0"),
        ({"handshake_timeout": "nan"}, {}, None, "must be positive"),
        ({}, {}, "keepalive = nan\n", "must be positive"),
        ({}, {"MTLSCHAT_IDLE_TIMEOUT": "inf"}, None, "must be positive and finite"),
        ({"rate": "inf"}, {}, None, "must be >= 0 and finite"),
        ({"log_level": "chatty"}, {}, None, "use DEBUG, INFO"),
        ({}, {}, "porty = 1\n", "unknown setting 'porty'"),
        ({}, {}, "port = [1\n", "bad TOML"),
        ({}, {}, "port = true\n", "expected an integer"),
    ],
)
def test_bad_values_are_one_line_errors(
    tmp_path: Path, flags: dict[str, object], env: dict[str, str], toml: str | None, message: str
) -> None:
    path = None
    if toml is not None:
        path = tmp_path / "c.toml"
        path.write_text(toml)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(flags, env=env, config_file=path)
    assert "\n" not in str(info.value)


def test_cli_missing_pki_is_one_line_exit_1(tmp_path: Path, mtlschat_cli: CLIRunner) -> None:
    r = mtlschat_cli("server", "--pki", tmp_path / "nope", "--port", "0")
    assert r.returncode == 1
    assert r.stderr.startswith("mtlschat server: error: CA certificate not found")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_cli_bad_env_and_config_file(tmp_path: Path, pki: TestPKI, mtlschat_cli: CLIRunner) -> None:
    r = mtlschat_cli("server", "--pki", pki.dir, env={"MTLSCHAT_MAX_CONNECTIONS": "lots"})
    assert r.returncode == 1 and "MTLSCHAT_MAX_CONNECTIONS" in r.stderr
    assert r.stderr.count("\n") == 1
    r = mtlschat_cli("server", "--pki", pki.dir, "--config", tmp_path / "missing.toml")
    assert r.returncode == 1 and "config file not found" in r.stderr


def test_cli_port_in_use(pki: TestPKI, mtlschat_cli: CLIRunner) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = mtlschat_cli("server", "--pki", pki.dir, "--host", "127.0.0.1", "--port", str(port))
    assert r.returncode == 1
    assert r.stderr.startswith(f"mtlschat server: error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in r.stderr


def test_cli_bad_server_key(tmp_path: Path, pki: TestPKI, mtlschat_cli: CLIRunner) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem\n")
    r = mtlschat_cli("server", "--pki", pki.dir, "--cert", junk, "--port", "0")
    assert r.returncode == 1
    assert r.stderr.startswith("mtlschat server: error: cannot load server certificate/key")
    assert r.stderr.count("\n") == 1


def test_cli_encrypted_server_key_is_refused_not_prompted(
    tmp_path: Path, pki: TestPKI, mtlschat_cli: CLIRunner
) -> None:
    pem = pki.server_bundle.read_bytes()
    start = pem.index(b"-----BEGIN PRIVATE KEY-----")
    end = pem.index(b"-----END PRIVATE KEY-----") + len(b"-----END PRIVATE KEY-----\n")
    key = load_pem_private_key(pem[start:end], None)
    encrypted = key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"secret")
    )
    bundle = tmp_path / "server-enc.pem"
    bundle.write_bytes(encrypted + pem[:start] + pem[end:])
    r = mtlschat_cli("server", "--pki", pki.dir, "--cert", bundle, "--port", "0", timeout=30)
    assert r.returncode == 1
    assert "passphrase-protected" in r.stderr and r.stderr.count("\n") == 1


def test_an_expired_crl_is_loaded_but_logged_as_an_error(
    fresh_pki: TestPKI, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenSSL will refuse every client against it: the operator must hear why, at once."""
    ca = fresh_pki.ca
    assert revoked_serials(fresh_pki.ca_cert, fresh_pki.crl) == frozenset()
    assert "expired" not in caplog.text
    old = build_crl(
        ca_key=ca.key,
        ca_cert=ca.cert,
        revoked=[],
        number=7,
        now=datetime.now(UTC) - timedelta(days=30),
        days=1,
    )
    fresh_pki.crl.write_bytes(old.public_bytes(Encoding.PEM))
    assert revoked_serials(fresh_pki.ca_cert, fresh_pki.crl) == frozenset()
    assert f"the CRL {fresh_pki.crl} expired on" in caplog.text
    assert "`mtlschat ca crl`" in caplog.text
