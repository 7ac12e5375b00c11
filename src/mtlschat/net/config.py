"""Server configuration: one dataclass, one function that merges its sources.

Precedence, highest first: command-line flags, ``MTLSCHAT_<NAME>`` environment variables, the
optional TOML file (``--config``), then the defaults below.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlschat.address import DEFAULT_PORT

ENV_PREFIX = "MTLSCHAT_"


class ConfigError(ValueError):
    """A configuration value or file is unusable; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``mtlschat server`` can be told. Paths left ``None`` are found in ``pki``."""

    pki: Path = Path("pki")
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    cert: Path | None = None
    ca: Path | None = None
    crl: Path | None = None
    max_line: int = 2048
    rate: float = 5.0
    burst: int = 20
    keepalive: float = 60.0
    idle_timeout: float = 180.0
    announce_limit: int = 500
    handshake_timeout: float = 10.0
    max_connections: int = 10000
    out_buffer: int = 1048576
    log_level: str = "INFO"

    @property
    def cert_path(self) -> Path:
        """The server's key + certificate PEM (default ``PKI/server.pem``)."""
        return self.cert if self.cert is not None else self.pki / "server.pem"

    @property
    def ca_path(self) -> Path:
        """The CA certificate client certificates must chain to (default ``PKI/ca.crt``)."""
        return self.ca if self.ca is not None else self.pki / "ca.crt"

    @property
    def crl_path(self) -> Path | None:
        """The CRL to enforce: ``--crl`` if given (it must exist), else ``PKI/crl.pem`` if present.

        Evaluated on every call so a SIGHUP reload picks up a CRL created after startup.
        """
        if self.crl is not None:
            return self.crl
        default = self.pki / "crl.pem"
        return default if default.exists() else None

    def check_files(self) -> None:
        """Raise :class:`ConfigError` if a PKI file the server needs is missing."""
        needed = (
            ("CA certificate", self.ca_path, "create a PKI with `mtlschat ca init`, or see --pki"),
            ("server certificate", self.cert_path, "`mtlschat ca issue --server HOST...`"),
        )
        for what, path, hint in needed:
            if not path.is_file():
                raise ConfigError(f"{what} not found: {path} ({hint})")
        if self.crl is not None and not self.crl.is_file():
            raise ConfigError(f"CRL not found: {self.crl}")


FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(ServerConfig)}
_POSITIVE = {"max_line", "burst", "max_connections", "out_buffer"}
_POSITIVE_FLOAT = {"keepalive", "idle_timeout", "handshake_timeout"}


def _convert(name: str, value: object, source: str) -> object:
    """Turn a raw value (a string from env/flags, or a TOML scalar) into the field's type."""
    kind = FIELDS[name].type
    where = f"{name.replace('_', '-')} (from {source})"
    try:
        if kind in ("Path", "Path | None"):
            if not isinstance(value, str | Path) or str(value) == "":
                raise ValueError("expected a path")
            return Path(value).expanduser()
        if kind == "str":
            if not isinstance(value, str):
                raise ValueError("expected a string")
            out: object = value
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError("expected an integer")
            out = int(value)
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError("expected a number")
            out = float(value)
        else:  # pragma: no cover - a new field type must be handled above
            raise AssertionError(kind)
    except ValueError as exc:
        raise ConfigError(f"bad value {value!r} for {where}: {exc}") from None
    if name == "port" and not 0 <= int(str(out)) <= 65535:
        raise ConfigError(f"bad value {value!r} for {where}: a port is 0-65535")
    if name in _POSITIVE and int(str(out)) < 1:
        raise ConfigError(f"bad value {value!r} for {where}: must be at least 1")
    if name in _POSITIVE_FLOAT and not 0 < float(str(out)) < math.inf:  # (NaN too)
        raise ConfigError(f"bad value {value!r} for {where}: must be positive and finite")
    if name == "announce_limit" and int(str(out)) < 0:
        raise ConfigError(f"bad value {value!r} for {where}: must be >= 0 (0 = always announce)")
    if name == "rate" and not 0 <= float(str(out)) < math.inf:
        raise ConfigError(
            f"bad value {value!r} for {where}: must be >= 0 and finite (0 = no limit)"
        )
    if name == "log_level":
        level = str(out).upper()
        if not isinstance(logging.getLevelName(level), int):
            raise ConfigError(f"bad value {value!r} for {where}: use DEBUG, INFO, WARNING, ERROR")
        out = level
    return out


def read_toml(path: Path) -> dict[str, object]:
    """The settings of a TOML config file (keys as in the flags, ``-`` or ``_``)."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"bad TOML in {path}: {exc}") from None
    # Allow the settings at top level or under a [server] table.
    section = data.get("server", data) if isinstance(data.get("server"), dict) else data
    return {str(k): v for k, v in section.items()}


def load_config(
    flags: Mapping[str, object | None] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> ServerConfig:
    """Merge flags over environment over the TOML file over defaults into a :class:`ServerConfig`.

    ``flags`` maps field names to values, ``None`` meaning "not given". ``env`` defaults to
    ``os.environ``; ``MTLSCHAT_CONFIG`` names the TOML file when ``config_file`` is not given.
    Raises :class:`ConfigError` with a one-line message on any bad value.
    """
    env = os.environ if env is None else env
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    values: dict[str, object] = {}
    if config_file is not None:
        for key, raw in read_toml(config_file).items():
            name = key.replace("-", "_")
            if name not in FIELDS:
                raise ConfigError(f"unknown setting {key!r} in {config_file}")
            values[name] = _convert(name, raw, str(config_file))
    for name in FIELDS:
        raw_env = env.get(ENV_PREFIX + name.upper())
        if raw_env is not None and raw_env != "":
            values[name] = _convert(name, raw_env, ENV_PREFIX + name.upper())
    for name, raw in (flags or {}).items():
        if name not in FIELDS:
            raise ConfigError(f"unknown setting {name!r}")
        if raw is not None:
            values[name] = _convert(name, raw, "--" + name.replace("_", "-"))
    return ServerConfig(**values)  # type: ignore[arg-type]
