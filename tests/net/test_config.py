"""Server configuration: flags > env > TOML file > defaults, and one-line errors."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    load_pem_private_key,
)
from typer.testing import CliRunner

from mtlschat.cli.main import app
from mtlschat.net.config import ServerConfig, settings_table
from mtlschat.setting import ConfigError, envvar, flag, public_settings, settings_of

if TYPE_CHECKING:
    from conftest import CLIRunner, TestPKI

README = Path(__file__).parents[2] / "README.md"


def check(pki: TestPKI, *args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """``mtlschat server --check`` in this process: each setting's value and where it came from,
    as printed. Raises what the command raised (a bad value: :class:`ConfigError`)."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MTLSCHAT_")}
    result = CliRunner().invoke(
        app, ["server", "--pki", str(pki.dir), "--check", *args], env={**unset, **(env or {})}
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return {
        line.split(" = ")[0].lstrip("# "): line.split(" = ", 1)[1]
        for line in result.output.splitlines()
    }


def test_defaults() -> None:
    cfg = ServerConfig()
    assert (cfg.host, cfg.port, cfg.max_line, cfg.rate, cfg.burst) == ("0.0.0.0", 7443, 2048, 5, 20)
    assert cfg.cert_path == Path("pki/server.pem") and cfg.ca_path == Path("pki/ca.crt")


def test_every_default_is_a_valid_value_of_its_setting() -> None:
    for name, declared in settings_of(ServerConfig).items():
        assert declared.kind.parse(declared.default) == declared.default, name
        if not declared.shown_default:  # what --help shows reads back as the default
            assert declared.kind.parse(declared.default_text) == declared.default, name


def test_flags_beat_env_beat_file(tmp_path: Path, pki: TestPKI) -> None:
    toml = tmp_path / "server.toml"
    toml.write_text('port = 1000\nrate = 2.5\nmax-line = 512\nlog_level = "debug"\nburst = 3\n')
    env = {"MTLSCHAT_PORT": "2000", "MTLSCHAT_BURST": "7", "MTLSCHAT_RATE": ""}
    got = check(pki, "--port", "3000", "--config", str(toml), env=env)
    assert got["port"] == "3000  # --port"
    assert got["burst"] == "7  # MTLSCHAT_BURST"
    assert got["rate"] == f"2.5  # rate in {toml}"  # an empty variable is not set
    assert got["max-line"] == f"512  # max-line in {toml}"
    assert got["log-level"] == f'"DEBUG"  # log-level in {toml}'
    assert got["keepalive"] == "60  # default"
    assert got["cert"] == "PKI/server.pem  # default"
    # MTLSCHAT_CONFIG names the file when --config is not given; a [server] table works too.
    toml.write_text("[server]\nidle-timeout = 30\n")
    got = check(pki, env={"MTLSCHAT_CONFIG": str(toml)})
    assert got["idle-timeout"] == f"30  # idle-timeout in {toml}"


def test_crl_path_found_in_pki_only_if_present(tmp_path: Path) -> None:
    cfg = ServerConfig(pki=tmp_path)
    assert cfg.crl_path is None
    (tmp_path / "crl.pem").write_text("x")
    assert cfg.crl_path == tmp_path / "crl.pem"  # looked up again (a SIGHUP picks it up)


@pytest.mark.parametrize(
    ("flags", "env", "toml", "message"),
    [
        (["--port", "x"], {}, None, "bad value 'x' for --port: expected an integer"),
        ([], {"MTLSCHAT_PORT": "70000"}, None, "for MTLSCHAT_PORT: must be 0-65535"),
        ([], {"MTLSCHAT_RATE": "-1"}, None, "must be >= 0"),
        (["--max-line", "0"], {}, None, "must be at least 1"),
        ([], {"MTLSCHAT_RATE": "nan"}, None, "must be >= 0"),
        (["--handshake-timeout", "nan"], {}, None, "must be positive"),
        ([], {}, "keepalive = nan\n", "for keepalive in .*c.toml: must be positive"),
        ([], {"MTLSCHAT_IDLE_TIMEOUT": "inf"}, None, "must be positive and finite"),
        (["--rate", "inf"], {}, None, "must be >= 0 and finite"),
        (["--log-level", "chatty"], {}, None, "use DEBUG, INFO"),
        ([], {}, "porty = 1\n", "unknown setting 'porty'"),
        ([], {}, "welcome-names = 1\n", "unknown setting 'welcome-names'"),  # not public
        ([], {}, "port = [1\n", "bad TOML"),
        ([], {}, "port = true\n", "bad value true for port in .*: expected an integer"),
    ],
)
def test_bad_values_are_one_line_errors(
    tmp_path: Path,
    pki: TestPKI,
    flags: list[str],
    env: dict[str, str],
    toml: str | None,
    message: str,
) -> None:
    if toml is not None:
        path = tmp_path / "c.toml"
        path.write_text(toml)
        flags = [*flags, "--config", str(path)]
    with pytest.raises(ConfigError, match=message) as info:
        check(pki, *flags, env=env)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "abc"], {}, "bad value 'abc' for --port: expected an integer"),
        ([], {"MTLSCHAT_PORT": "abc"}, "bad value 'abc' for MTLSCHAT_PORT: expected an integer"),
    ],
)
def test_cli_bad_value_is_one_line_exit_1(
    pki: TestPKI, mtlschat_cli: CLIRunner, args: list[str], env: dict[str, str], message: str
) -> None:
    r = mtlschat_cli("server", "--pki", pki.dir, *args, env=env)
    assert (r.returncode, r.stderr) == (1, f"mtlschat: error: {message}\n")


def test_readme_settings_table_is_the_declarations() -> None:
    """Regenerate it with: python -c 'from mtlschat.net.config import settings_table as t;
    print(t(), end="")' and paste it between the markers."""
    text = README.read_text()
    start = text.index("<!-- settings-table -->\n") + len("<!-- settings-table -->\n")
    end = text.index("<!-- /settings-table -->")
    assert text[start:end] == settings_table()


def test_help_shows_every_setting_as_declared(mtlschat_cli: CLIRunner) -> None:
    r = mtlschat_cli("server", "--help", env={"COLUMNS": "300"})
    assert r.returncode == 0
    options = {
        line.split()[1]: " ".join(line.split()[2:])
        for line in r.stdout.splitlines()
        if line.startswith("│ --")
    }
    declared = public_settings(ServerConfig)
    assert set(options) == {flag(n) for n in declared} | {"--config", "--check", "--help"}
    for name, s in declared.items():
        text = options[flag(name)]
        assert text.startswith(s.metavar + " "), name
        assert f"[env var: {envvar(name)}]" in text
        # (typer shows no empty default: --operators and --motd have none.)
        assert f"[default: {s.default_text}]" in text or not s.default_text, name


def test_cli_missing_pki_is_one_line_exit_1(tmp_path: Path, mtlschat_cli: CLIRunner) -> None:
    r = mtlschat_cli("server", "--pki", tmp_path / "nope", "--port", "0")
    assert r.returncode == 1
    assert r.stderr.startswith("mtlschat: error: CA certificate not found")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_cli_missing_config_file(tmp_path: Path, pki: TestPKI, mtlschat_cli: CLIRunner) -> None:
    r = mtlschat_cli("server", "--pki", pki.dir, "--config", tmp_path / "missing.toml")
    assert r.returncode == 1 and "config file not found" in r.stderr


def test_cli_port_in_use(pki: TestPKI, mtlschat_cli: CLIRunner) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = mtlschat_cli("server", "--pki", pki.dir, "--host", "127.0.0.1", "--port", str(port))
    assert r.returncode == 1
    assert r.stderr.startswith(f"mtlschat: error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in r.stderr


def test_cli_bad_server_key(tmp_path: Path, pki: TestPKI, mtlschat_cli: CLIRunner) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem\n")
    r = mtlschat_cli("server", "--pki", pki.dir, "--cert", junk, "--port", "0")
    assert r.returncode == 1
    assert r.stderr.startswith("mtlschat: error: cannot load server certificate/key")
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
