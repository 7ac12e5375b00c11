"""The one error style of every ``mtlschat`` command: ``mtlschat: error: ...``, one line on
stderr, and an exit code (1 for a failure, 2 for a command line typer cannot parse)."""

from __future__ import annotations

from typing import NoReturn

import typer

PREFIX = "mtlschat: error: "


def error(message: str) -> None:
    """Print ``message`` as the one error line (it is not re-cased: ``PKCS#12`` stays)."""
    typer.echo(PREFIX + " ".join(message.split()), err=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as the one error line and exit with ``code``."""
    error(message)
    raise typer.Exit(code)
