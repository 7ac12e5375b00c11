"""The ``mtlschat`` command: registers one sub-app or command per module."""

from __future__ import annotations

import sys

import typer

from mtlschat import __version__
from mtlschat.cli import admin as admin_cli
from mtlschat.cli import bench as bench_cli
from mtlschat.cli import ca as ca_cli
from mtlschat.cli import client as client_cli
from mtlschat.cli import history as history_cli
from mtlschat.cli import server as server_cli
from mtlschat.cli.helptext import HELP_NAMES, polish
from mtlschat.cli.output import error
from mtlschat.setting import ConfigError

app = typer.Typer(
    name="mtlschat",
    help="""A chat room whose only door is a certificate.

    `mtlschat COMMAND -h` tells what a command does, its options and examples.

    Examples:
      mtlschat ca init && mtlschat ca issue --server localhost && mtlschat ca issue alice
      mtlschat server
      mtlschat client --cert alice.pem localhost
    """,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": HELP_NAMES},
)
app.add_typer(ca_cli.app, name="ca")
app.add_typer(history_cli.app, name="history")
app.command("server")(server_cli.server)
app.command("client")(client_cli.client)
app.command("bench")(bench_cli.bench)
app.command("admin")(admin_cli.admin)
app.command("request")(ca_cli.request)
app.command("bundle")(ca_cli.bundle)


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


def _usage_message(exc: typer.TyperException) -> str:
    """typer's (click's) message for a command line it cannot parse, and where help is."""
    message: str = getattr(exc, "format_message", lambda: str(exc))()
    ctx = getattr(exc, "ctx", None)
    return f"{message} (see '{ctx.command_path} --help')" if ctx is not None else message


def main() -> None:
    """Console-script entry point: every error, typer's own included, is one line."""
    command = typer.main.get_command(app)
    polish(command)
    try:
        code = command.main(prog_name="mtlschat", standalone_mode=False)
    except ConfigError as exc:  # a bad setting (flag, variable or file) or a missing file
        error(str(exc))
        code = 1
    except typer.TyperException as exc:  # typer's usage errors: unknown option, bad value...
        if str(exc).strip():  # (empty: no arguments, and typer has printed the help)
            error(_usage_message(exc))
        code = exc.exit_code
    except typer.Abort:  # typer's confirm/prompt interrupted (Ctrl-C, Ctrl-D)
        error("interrupted")
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
