"""``mtlschat history export``: a history file as JSON Lines, for operators (archives, audits).

It reads the file while a server may be writing it (no lock), and includes private messages:
whoever can read the file can read them anyway.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from mtlschat.history.sqlite import SQLiteStore
from mtlschat.history.store import DM, ROOM, HistoryError, Record

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float) -> float:
    """``--since``: an ISO 8601 date or date-time (UTC unless it says otherwise), or an age
    (``30m``, ``12h``, ``7d``, ``2w``); the Unix time it stands for. ValueError if neither."""
    if m := _AGE.match(text.strip()):
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"bad --since {text!r}: use a date (2026-11-29), a date and time "
            "(2026-11-29T14:02), or an age (30m, 12h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def record_json(room: str, r: Record) -> str:
    """One exported line."""
    obj: dict[str, object] = {
        "room": room,
        "offset": r.offset,
        "ts": r.ts,
        "time": datetime.fromtimestamp(r.ts, UTC).isoformat(timespec="seconds"),
        "kind": r.kind,
    }
    if r.sender:
        obj["from"] = r.sender
    if r.kind == DM:
        obj["to"] = r.to
    if r.sender:
        obj["text"] = r.text
    return json.dumps(obj, ensure_ascii=False)


def export_lines(path: Path, room: str = ROOM, since: float = 0.0) -> Iterator[str]:
    """The JSON lines of ``room`` in the history file ``path``, oldest first, from ``since`` on.

    Raises :class:`HistoryError` (one line naming the file) if it cannot be read.
    """
    store = SQLiteStore.open_reader(path)
    try:
        for record in store.export(room, since):
            yield record_json(room, record)
    finally:
        store.close()


__all__ = ["HistoryError", "export_lines", "parse_since", "record_json"]
