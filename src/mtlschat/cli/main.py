"""The ``mtlschat`` command: registers one sub-app or command per module."""

from __future__ import annotations

import typer

from mtlschat import __version__
from mtlschat.cli import bench as bench_cli
from mtlschat.cli import ca as ca_cli
from mtlschat.cli import client as client_cli
from mtlschat.cli import server as server_cli

app = typer.Typer(
    name="mtlschat",
    help="A chat room whose only door is a certificate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(ca_cli.app, name="ca")
app.command("server")(server_cli.server)
app.command("client")(client_cli.client)
app.command("bench")(bench_cli.bench)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mtlschat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """A chat room whose only door is a certificate."""


def main() -> None:
    """Console-script entry point."""
    app()
