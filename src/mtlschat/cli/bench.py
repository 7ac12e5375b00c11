"""``mtlschat bench``: thin CLI over :mod:`mtlschat.bench`."""

from __future__ import annotations

import typer


def bench() -> None:
    """Load-test a server."""
    typer.echo("not implemented yet", err=True)
    raise typer.Exit(2)
