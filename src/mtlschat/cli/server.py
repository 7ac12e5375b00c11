"""``mtlschat server``: thin CLI over :mod:`mtlschat.net`."""

from __future__ import annotations

import typer


def server() -> None:
    """Run the chat server."""
    typer.echo("not implemented yet", err=True)
    raise typer.Exit(2)
