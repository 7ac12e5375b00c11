"""``mtlschat client``: thin CLI over :mod:`mtlschat.client`."""

from __future__ import annotations

import typer


def client() -> None:
    """Join a chat server with a certificate bundle."""
    typer.echo("not implemented yet", err=True)
    raise typer.Exit(2)
