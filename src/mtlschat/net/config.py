"""The server's settings: the room's (:class:`~mtlschat.chat.settings.RoomSettings`) plus the
transport's, each declared once (see :mod:`mtlschat.setting`).

``mtlschat server`` reads them, highest first, from flags, ``MTLSCHAT_<NAME>`` environment
variables, the optional TOML file (``--config``, :func:`read_settings_file`), then the defaults.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from mtlschat.address import DEFAULT_PORT
from mtlschat.chat.settings import RoomSettings
from mtlschat.cluster.url import RedisURL, RedisURLError
from mtlschat.setting import (
    Choice,
    ConfigError,
    FilePath,
    Integer,
    Nullable,
    Number,
    Switch,
    Text,
    flag,
    public_settings,
    setting,
)

__all__ = ["ConfigError", "ServerConfig", "read_settings_file"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class ServerConfig(RoomSettings):
    """Everything ``mtlschat server`` can be told. Paths left ``None`` are found in ``pki``."""

    pki: Path = setting(
        Path("pki"), FilePath("DIR"), "PKI directory (ca.crt, server.pem, crl.pem)."
    )
    host: str = setting("0.0.0.0", Text(), "Address to listen on.", unit="host")
    port: int = setting(
        DEFAULT_PORT, Integer(min=0, max=65535), "TCP port; 0 picks a free one.", unit="port"
    )
    workers: int = setting(
        1,
        Integer(min=1, max=256),
        "Server processes sharing the port (SO_REUSEPORT), each a node NODE-wK with metrics on "
        "the metrics port + K, supervised by this one (restarted when one dies); more than 1 "
        "needs --redis.",
        unit="n",
    )
    cert: Path | None = setting(
        None,
        Nullable(FilePath(), off=()),
        "The server's key + certificate PEM.",
        shown_default="PKI/server.pem",
    )
    ca: Path | None = setting(
        None,
        Nullable(FilePath(), off=()),
        "CA certificate client certificates must chain to.",
        shown_default="PKI/ca.crt",
    )
    crl: Path | None = setting(
        None,
        Nullable(FilePath(), off=()),
        "CRL to enforce (it must exist).",
        shown_default="PKI/crl.pem if it exists",
    )
    handshake_timeout: float = setting(
        10.0, Number(), "Seconds to finish the TLS handshake.", unit="seconds"
    )
    max_connections: int = setting(
        10000,
        Integer(min=1),
        "Connections past the TLS handshake; beyond it, new TCP connections are accepted and "
        "closed at once (logged).",
    )
    max_handshakes: int = setting(
        1000,
        Integer(min=1),
        "TLS handshakes in progress, apart from --max-connections; when full, the oldest is "
        "dropped to make room.",
    )
    max_handshakes_per_address: int = setting(
        50,
        Integer(min=1),
        "TLS handshakes in progress from one IP address; beyond it, new connections from that "
        "address are closed at once.",
    )
    out_buffer: int = setting(
        1048576,
        Integer(min=1),
        "Bytes waiting for one client; reaching it disconnects that client (slow consumer).",
        unit="bytes",
    )
    # 128 KiB (Linux grants twice that): a burst round for a member fits in one write. With
    # 64 KiB, rounds were cut into partial writes retried when the socket drained, which cost
    # the server ~20% more CPU per delivery; 256 KiB saved no more CPU and let more of a lagging
    # member's backlog wait in the kernel, raising latency (docs/performance.md, "The hot path").
    send_buffer: int = setting(
        131072,
        Integer(min=4096),
        "Kernel send buffer per client (SO_SNDBUF); output beyond it waits in --out-buffer.",
        unit="bytes",
    )
    log_level: str = setting(
        "INFO",
        Choice(LOG_LEVELS),
        "Least severe log lines written: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
        unit="level",
    )
    log_format: str = setting(
        "TEXT",
        Choice(("TEXT", "JSON")),
        "Log lines as text, or as JSON objects (time, level, message) for log shippers.",
        unit="format",
    )
    pidfile: Path | None = setting(
        None,
        Nullable(FilePath(), off=()),
        "Write the server's PID to this file once it listens (removed at exit).",
        shown_default="none",
    )
    control: str | None = setting(
        None,
        Nullable(Text(), off=()),
        "Unix socket (mode 0600) for `mtlschat admin` (who, kick, ban, unban, reload, stats), "
        "or off.",
        unit="path",
        shown_default="PKI/control.sock",
    )
    metrics: str | None = setting(
        None,
        Nullable(Text(), off=()),
        "Serve Prometheus metrics and /healthz on [HOST:]PORT (a bare port: 127.0.0.1).",
        unit="address",
        shown_default="off",
    )
    node: str | None = setting(
        None,
        Nullable(Text(), off=()),
        "This server's name in the metrics' node label.",
        unit="name",
        shown_default="the host name",
    )
    redis: str | None = setting(
        None,
        Nullable(Text(), off=()),
        "One room over several nodes through this Redis (redis://HOST:PORT/DB; rediss:// for "
        "TLS), which then holds the history.",
        unit="url",
        shown_default="off",
    )
    redis_ca: Path | None = setting(
        None,
        Nullable(FilePath(), off=()),
        "CA the Redis server's certificate must chain to (rediss://).",
        shown_default="the system's CAs",
    )
    redis_password_file: Path | None = setting(
        None,
        Nullable(FilePath(), off=()),
        "File holding the Redis password (else MTLSCHAT_REDIS_PASSWORD; never in the URL).",
        shown_default="none",
    )
    history: str | None = setting(
        None,
        Nullable(Text(), off=()),
        "History file (SQLite, created on first start), or off to keep no history.",
        unit="file",
        shown_default="PKI/history.db",
    )
    history_dms: bool = setting(
        True,
        Switch(),
        "Keep private messages in the history (only ever shown to their sender and recipient).",
    )
    history_days: float = setting(
        90.0,
        Number(positive=False, note="0 = forever"),
        "Drop history lines older than this; 0 keeps them forever.",
        unit="days",
    )
    history_lines: int = setting(
        1_000_000,
        Integer(min=0, note="0 = no limit"),
        "Keep at most this many history lines (the oldest go first); 0 = no limit.",
        unit="lines",
    )

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

    @property
    def history_path(self) -> Path | None:
        """The history file (default ``PKI/history.db``), or None with ``--history off``."""
        if self.history is None:
            return self.pki / "history.db"
        if self.history.lower() == "off":
            return None
        return Path(self.history).expanduser()

    def check_workers(self) -> None:
        """Raise :class:`ConfigError` for ``--workers`` above 1 without a room they can share."""
        if self.workers > 1 and self.redis is None:
            raise ConfigError("--workers needs --redis: separate processes would be separate rooms")

    @property
    def control_path(self) -> Path | None:
        """The control socket (default ``PKI/control.sock``), or None with ``--control off``."""
        if self.control is None:
            return self.pki / "control.sock"
        if self.control.lower() == "off":
            return None
        return Path(self.control).expanduser()

    def check_files(self) -> None:
        """Raise :class:`ConfigError` if a PKI file the server needs is missing (or the Redis
        URL is bad, or a Redis file it names is missing)."""
        needed = (
            ("CA certificate", self.ca_path, "create a PKI with `mtlschat ca init`, or see --pki"),
            ("server certificate", self.cert_path, "`mtlschat ca issue --server HOST...`"),
        )
        for what, path, hint in needed:
            if not path.is_file():
                raise ConfigError(f"{what} not found: {path} ({hint})")
        if self.crl is not None and not self.crl.is_file():
            raise ConfigError(f"CRL not found: {self.crl}")
        if self.crl is None and self.crl_path is None and (self.pki / "ca.db").is_file():
            # `ca init` always writes crl.pem next to ca.db: its absence means it was lost, and
            # starting without it would let every revoked member back in (fail closed).
            raise ConfigError(
                f"CRL not found: {self.pki / 'crl.pem'}, although {self.pki} holds the CA's "
                "record: revoked members would get in (`mtlschat ca crl` writes it again)"
            )
        if self.redis is not None:
            try:
                RedisURL.parse(self.redis)
            except RedisURLError as exc:
                raise ConfigError(str(exc)) from None
            for what, file in (("Redis CA", self.redis_ca), ("password", self.redis_password_file)):
                if file is not None and not file.is_file():
                    raise ConfigError(f"{what} file not found: {file}")


def read_settings_file(path: Path) -> dict[str, object]:
    """The settings in the TOML file ``path``, by field name, values as written (unchecked).

    Keys are the flags' names (``max-line``; ``max_line`` too), at top level or under
    ``[server]``. Raises :class:`ConfigError` if the file is unreadable or a key is unknown.
    """
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"bad TOML in {path}: {exc}") from None
    section = data["server"] if isinstance(data.get("server"), dict) else data
    known = public_settings(ServerConfig)
    values: dict[str, object] = {}
    for key, raw in section.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"unknown setting {key!r} in {path}")
        values[name] = raw
    return values


def settings_table() -> str:
    """The README's table of server settings, in Markdown (a test keeps the README equal)."""
    rows = ["| flag | default | what |", "|---|---|---|"]
    for name, declared in public_settings(ServerConfig).items():
        rows.append(
            f"| `{flag(name)} {declared.metavar}` | `{declared.default_text}` | {declared.help} |"
        )
    return "\n".join(rows) + "\n"
