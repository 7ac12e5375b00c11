"""``mtlschat client`` end to end: bundle -> TLS context -> pipe mode or the terminal UI."""

from __future__ import annotations

import asyncio
import getpass
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from prompt_toolkit.patch_stdout import patch_stdout

from mtlschat.address import Address
from mtlschat.client.config import (
    ClientConfig,
    choose_cert,
    choose_servers,
    load_config,
    remember,
)
from mtlschat.client.connection import Link
from mtlschat.client.errors import ClientError, ExitCode
from mtlschat.client.pipe import run_pipe
from mtlschat.client.protocol import ChatState
from mtlschat.client.tls import (
    PASSPHRASE_ENV,
    check_dates,
    client_context,
    load_identity,
)
from mtlschat.client.ui import ChatUI, run_ui

PASSPHRASE_TRIES = 3


def _context(cert: Path, ca: Path | None, interactive: bool) -> tuple[ssl.SSLContext, str | None]:
    """The TLS context, and a warning if our certificate expires soon. Asks for the key's
    passphrase on the terminal if it needs one (three tries); refuses an expired bundle before
    any network traffic."""
    passphrase = os.environ.get(PASSPHRASE_ENV)
    for attempt in range(PASSPHRASE_TRIES + 1):
        try:
            identity = load_identity(cert, passphrase)
            break
        except ClientError as err:
            asked = attempt > 0
            retry = err.code is ExitCode.BAD_PASSPHRASE and interactive
            if not retry or (passphrase is not None and not asked) or attempt == PASSPHRASE_TRIES:
                raise
            if asked:
                print(f"{err.message}, try again", file=sys.stderr)
        try:
            passphrase = getpass.getpass(f"passphrase for {cert}: ")
        except EOFError:
            raise ClientError(ExitCode.BAD_PASSPHRASE, f"no passphrase given for {cert}") from None
    warning = check_dates(identity)
    return client_context(cert, passphrase, ca), warning


def run_client(
    cert: Path | None,
    address: str | Sequence[str] | None,
    *,
    ca: Path | None = None,
    pipe: bool | None = None,
    timestamps: bool = False,
) -> None:
    """Join the room; return after a clean exit, raise :class:`ClientError` on failure.

    ``address``: one or more ``HOST[:PORT]`` (the nodes of one room). ``cert`` and
    ``address`` default to ``MTLSCHAT_CERT``/``MTLSCHAT_SERVER`` and the config file
    (:mod:`.config`), which remembers them after the first successful run.
    """
    config = load_config()
    cert = choose_cert(cert, config)
    given = [address] if isinstance(address, str) else list(address or ())
    servers = choose_servers(given, config)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if pipe is None:
        pipe = not sys.stdin.isatty()
    context, warning = _context(cert, ca, sys.stdin.isatty())

    async def main() -> None:
        if pipe or not interactive:
            if warning:
                print(f"mtlschat: warning: {warning}", file=sys.stderr)
            await run_pipe(
                servers,
                context,
                sys.stdin.fileno(),
                sys.stdout,
                sys.stderr,
                timestamps=timestamps,
            )
            return
        state = ChatState()
        ui = ChatUI(state, paste_confirm=config.paste_confirm, bell=config.bell, title=config.title)
        link = Link(
            servers, context, ui.show_event, ui.show_status, state=state, on_sent=ui.show_sent
        )
        if warning:
            ui.note(warning, error=True)
        with patch_stdout(raw=True):  # a stray print (a warning) must not clobber the prompt
            await run_ui(ui, link)

    asyncio.run(main())
    if interactive and not pipe:  # a person at a terminal, not a script
        _remember(config, cert, servers)


def _remember(config: ClientConfig, cert: Path, servers: list[Address]) -> None:
    """After a first successful run in the terminal UI: keep the bundle and server as defaults,
    and say so. (Scripts in pipe mode never write the user's config.)"""
    if remember(config, cert, servers):
        server = " ".join(map(str, servers))
        print(
            f"mtlschat: {cert} and {server} are now the defaults (in {config.path}): "
            "next time 'mtlschat client' alone will do",
            file=sys.stderr,
        )
