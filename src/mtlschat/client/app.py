"""``mtlschat client`` end to end: bundle -> TLS context -> pipe mode or the terminal UI."""

from __future__ import annotations

import asyncio
import getpass
import os
import ssl
import sys
from pathlib import Path

from prompt_toolkit.patch_stdout import patch_stdout

from mtlschat.address import parse_address
from mtlschat.client.connection import Link
from mtlschat.client.errors import ClientError, ExitCode
from mtlschat.client.pipe import run_pipe
from mtlschat.client.protocol import ChatState
from mtlschat.client.tls import PASSPHRASE_ENV, client_context
from mtlschat.client.ui import ChatUI, run_ui


def _context(cert: Path, ca: Path | None, interactive: bool) -> ssl.SSLContext:
    """The TLS context; asks for the key's passphrase on the terminal if it needs one."""
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        return client_context(cert, passphrase, ca)
    except ClientError as err:
        if err.code is not ExitCode.BAD_PASSPHRASE or passphrase is not None or not interactive:
            raise
    try:
        passphrase = getpass.getpass(f"passphrase for {cert}: ")
    except EOFError:
        raise ClientError(ExitCode.BAD_PASSPHRASE, f"no passphrase given for {cert}") from None
    return client_context(cert, passphrase, ca)


def run_client(
    cert: Path,
    address: str | None,
    *,
    ca: Path | None = None,
    pipe: bool | None = None,
    timestamps: bool = False,
) -> None:
    """Join the room; return after a clean exit, raise :class:`ClientError` on failure."""
    try:
        target = parse_address(address)
    except ValueError as exc:
        raise ClientError(ExitCode.USAGE, str(exc)) from None
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if pipe is None:
        pipe = not sys.stdin.isatty()
    context = _context(cert, ca, sys.stdin.isatty())
    if pipe or not interactive:
        asyncio.run(
            run_pipe(
                target, context, sys.stdin.fileno(), sys.stdout, sys.stderr, timestamps=timestamps
            )
        )
        return

    async def main() -> None:
        state = ChatState()
        ui = ChatUI(state)
        link = Link(target, context, ui.show_event, ui.show_status, state=state)
        with patch_stdout(raw=True):  # a stray print (a warning) must not clobber the prompt
            await run_ui(ui, link)

    asyncio.run(main())
