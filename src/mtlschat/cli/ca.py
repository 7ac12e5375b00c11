"""``mtlschat ca ...``: thin CLI over :mod:`mtlschat.ca`."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Run the certificate authority: init, issue, sign, revoke, export ...",
    no_args_is_help=True,
)
