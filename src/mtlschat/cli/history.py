"""``mtlschat history``: thin CLI over :mod:`mtlschat.history.export`."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mtlschat.cli.output import fail

app = typer.Typer(
    help="""The chat history kept by the server.

    Examples:
      mtlschat history export --since 7d > last-week.jsonl
    """,
    no_args_is_help=True,
)


@app.command("export")
def export(
    history: Path | None = typer.Option(
        None, "--history", help="History file. [default: PKI/history.db]"
    ),
    pki: Path = typer.Option(Path("pki"), "--pki", envvar="MTLSCHAT_PKI", help="PKI directory."),
    since: str | None = typer.Option(
        None, "--since", help="From this date/time (ISO 8601, UTC by default) or age (7d, 12h)."
    ),
    room: str = typer.Option("main", "--room", help="Which room."),
) -> None:
    """Print the history as JSON Lines (private messages included), oldest first.

    Examples:
      mtlschat history export
      mtlschat history export --since 2026-11-01 --pki /etc/mtlschat
      mtlschat history export --history /var/lib/mtlschat/history.db --since 12h
    """
    from mtlschat.history.export import HistoryError, export_lines, parse_since

    path = history if history is not None else pki / "history.db"
    try:
        start = parse_since(since, time.time()) if since else 0.0
        for line in export_lines(path, room, start):
            typer.echo(line)
    except (ValueError, HistoryError) as exc:
        fail(str(exc))
