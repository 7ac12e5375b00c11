"""``mtlschat admin``: thin CLI over the server's control socket (:mod:`mtlschat.net.control`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mtlschat.cli.output import fail
from mtlschat.net.control import COMMANDS, ControlError, request

NO_SERVER = 3  # exit code: no server answers on the control socket


def admin(
    command: str = typer.Argument(..., metavar="COMMAND", help=f"One of {', '.join(COMMANDS)}."),
    args: list[str] | None = typer.Argument(
        None,
        metavar="[ARGS]...",
        help="As after the chat command: kick NAME [reason], ban NAME [DURATION] [reason], "
        "unban NAME.",
    ),
    control: str | None = typer.Option(
        None,
        "--control",
        envvar="MTLSCHAT_CONTROL",
        metavar="PATH",
        help="The server's control socket (its --control). [default: PKI/control.sock]",
    ),
    pki: Path = typer.Option(
        Path("pki"), "--pki", envvar="MTLSCHAT_PKI", metavar="DIR", help="The server's --pki."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the server's reply as JSON."),
) -> None:
    """Run a room from the shell: for scripts, and when no operator is online.

    Talks to the server on this machine over its control socket, as the operator "admin(shell)"
    (in the room's announcements and the audit log). Whoever can open the socket can use it: it
    is mode 0600, so the user the server runs as, and root.

    Exit codes: 0 done, 1 the server refused (no such user, not banned, reload failed...), 2 a bad
    command line, 3 no server is listening on the control socket.

    Examples:
      mtlschat admin who
      mtlschat admin kick bob flooding
      mtlschat admin ban bob 7d spamming
      mtlschat admin unban bob
      mtlschat admin reload
      mtlschat admin stats --control /run/mtlschat/control.sock
    """
    if command not in COMMANDS:
        fail(f"unknown command {command!r}: use {', '.join(COMMANDS)}", 2)
    if control is not None and control.lower() == "off":
        fail("--control is off: this server has no control socket", NO_SERVER)
    path = Path(control).expanduser() if control is not None else pki / "control.sock"
    try:
        reply = request(path, command, " ".join(args or []))
    except ControlError as exc:
        fail(str(exc), NO_SERVER)
    if as_json:
        typer.echo(json.dumps(reply, indent=2))
    if not reply.get("ok"):
        if not as_json:
            fail(str(reply.get("error") or "the server refused"), 1)
        raise typer.Exit(1)
    if not as_json:
        _show(reply)


def _show(reply: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    sessions, stats = reply.get("sessions"), reply.get("stats")
    if isinstance(sessions, list):
        table = Table("name", "address", "mode", "since", box=None)
        for s in sessions:
            if isinstance(s, dict):
                table.add_row(*(str(s.get(k, "")) for k in ("name", "address", "mode", "since")))
        console.print(table if sessions else "nobody is online")
    elif isinstance(stats, dict):
        table = Table("metric", "value", box=None)
        for name, value in stats.items():
            table.add_row(str(name), f"{value:.15g}" if isinstance(value, float) else str(value))
        console.print(table)
    else:
        console.print(str(reply.get("text", "")), markup=False)
