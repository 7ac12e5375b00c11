"""``mtlschat client``: thin CLI over :mod:`mtlschat.client`."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mtlschat.cli.output import fail
from mtlschat.client.errors import ClientError, ExitCode

DEBUG_ENV = "MTLSCHAT_DEBUG"


def client(
    address: list[str] | None = typer.Argument(
        None,
        metavar="HOST[:PORT]...",
        help="The server; several: the nodes of one room, tried in turn (on reconnect too). "
        "[default: MTLSCHAT_SERVER, else the client config file, else localhost:7443]",
    ),
    cert: Path | None = typer.Option(
        None,
        "--cert",
        "-c",
        help="Your bundle from 'mtlschat ca issue' (key + certificate + CA certificate). "
        "[default: MTLSCHAT_CERT, else the client config file]",
    ),
    ca: Path | None = typer.Option(
        None, "--ca", help="Trust this CA certificate for the server instead of the bundle's."
    ),
    pipe: bool | None = typer.Option(
        None,
        "--pipe/--tui",
        help="Force pipe mode or the terminal UI. [default: pipe mode if stdin is no terminal]",
    ),
    timestamps: bool = typer.Option(
        False, "--timestamps", help="Pipe mode: prefix message lines with [HH:MM:SS]."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="On a TLS failure, also print OpenSSL's own words."
    ),
) -> None:
    """Join a chat server with a certificate bundle.

    An encrypted key's passphrase comes from MTLSCHAT_BUNDLE_PASSPHRASE or a prompt.
    After the first successful run, the bundle and server are remembered in
    ~/.config/mtlschat/client.toml, so 'mtlschat client' alone joins the same room.

    Examples:
      mtlschat client --cert alice.pem
      mtlschat client --cert alice.pem chat.example.org:8443
      mtlschat client --cert alice.pem node1.example.org node2.example.org
      echo "deploy finished" | mtlschat client --cert ci-bot.pem chat.example.org
    """
    # Imported here: the client (prompt_toolkit, TLS set-up) is only paid for by this command.
    from mtlschat.client.app import run_client

    try:
        run_client(cert, address, ca=ca, pipe=pipe, timestamps=timestamps)
    except ClientError as err:
        if verbose and err.detail:
            typer.echo(f"mtlschat: openssl: {err.detail}", err=True)
        fail(err.message, int(err.code))
    except KeyboardInterrupt:
        fail("interrupted", int(ExitCode.INTERRUPTED))
    except BrokenPipeError:  # stdout closed under pipe mode (e.g. `| head`): nothing to say
        raise typer.Exit(int(ExitCode.OK)) from None
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        fail(f"unexpected: {exc!r} (set {DEBUG_ENV}=1 for details)", int(ExitCode.ERROR))
