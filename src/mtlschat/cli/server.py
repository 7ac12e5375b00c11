"""``mtlschat server``: thin CLI over :mod:`mtlschat.net`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer


def server(
    config: Path | None = typer.Option(
        None, "--config", help="TOML file with any of these settings (env MTLSCHAT_CONFIG)."
    ),
    pki: Path | None = typer.Option(
        None, "--pki", help="PKI directory (ca.crt, server.pem, crl.pem). (default: pki)"
    ),
    host: str | None = typer.Option(
        None, "--host", help="Address to listen on. (default: 0.0.0.0)"
    ),
    port: int | None = typer.Option(None, "--port", help="TCP port; 0 picks one. (default: 7443)"),
    cert: Path | None = typer.Option(
        None, "--cert", help="Server key+certificate PEM. (default: PKI/server.pem)"
    ),
    ca: Path | None = typer.Option(None, "--ca", help="CA certificate. (default: PKI/ca.crt)"),
    crl: Path | None = typer.Option(
        None, "--crl", help="CRL to enforce. (default: PKI/crl.pem if it exists)"
    ),
    max_line: int | None = typer.Option(
        None, "--max-line", help="Longest accepted line, bytes. (default: 2048)"
    ),
    rate: float | None = typer.Option(
        None, "--rate", help="Messages per second per user; 0 = unlimited. (default: 5)"
    ),
    burst: int | None = typer.Option(None, "--burst", help="Rate-limit burst. (default: 20)"),
    keepalive: float | None = typer.Option(
        None, "--keepalive", help="Seconds of silence before a ping. (default: 60)"
    ),
    idle_timeout: float | None = typer.Option(
        None, "--idle-timeout", help="Seconds of silence before disconnecting. (default: 180)"
    ),
    announce_limit: int | None = typer.Option(
        None,
        "--announce-limit",
        help="Announce joins/leaves only up to this many people online; 0 = always. (default: 500)",
    ),
    handshake_timeout: float | None = typer.Option(
        None, "--handshake-timeout", help="Seconds to complete the TLS handshake. (default: 10)"
    ),
    max_connections: int | None = typer.Option(
        None, "--max-connections", help="Connections beyond this are refused. (default: 10000)"
    ),
    out_buffer: int | None = typer.Option(
        None, "--out-buffer", help="Unsent bytes per client before it is cut off. (default: 1 MiB)"
    ),
    log_level: str | None = typer.Option(
        None, "--log-level", help="DEBUG, INFO, WARNING or ERROR. (default: INFO)"
    ),
) -> None:
    """Run the chat server. Settings: flags > MTLSCHAT_<NAME> env vars > --config file."""
    # Imported here so `mtlschat --help` and the other commands don't pay for the server's.
    from mtlschat.net.config import ConfigError, load_config
    from mtlschat.net.server import StartupError, run_server
    from mtlschat.net.tls import TLSSetupError

    flags: dict[str, object | None] = {
        "pki": pki,
        "host": host,
        "port": port,
        "cert": cert,
        "ca": ca,
        "crl": crl,
        "max_line": max_line,
        "rate": rate,
        "burst": burst,
        "keepalive": keepalive,
        "idle_timeout": idle_timeout,
        "announce_limit": announce_limit,
        "handshake_timeout": handshake_timeout,
        "max_connections": max_connections,
        "out_buffer": out_buffer,
        "log_level": log_level,
    }
    try:
        cfg = load_config(flags, config_file=config)
        cfg.check_files()
        logging.basicConfig(
            level=cfg.log_level,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(message)s",
        )
        run_server(cfg)
    except (ConfigError, TLSSetupError, StartupError) as exc:
        typer.echo(f"mtlschat server: error: {exc}", err=True)
        raise typer.Exit(1) from None
