"""``mtlschat history export``: JSON Lines for operators, from a real file, as a real process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from mtlschat.history.sqlite import SQLiteStore
from mtlschat.history.store import DM, HIDDEN, MSG, Record

if TYPE_CHECKING:
    from conftest import CLIRunner

DAY = 86400.0


def test_export_writes_json_lines_with_dms_and_since(
    tmp_path: Path, mtlschat_cli: CLIRunner
) -> None:
    path = tmp_path / "h.db"
    store = SQLiteStore.open(path)  # a running server holds the file: export needs no lock
    store.append(
        "main",
        [
            Record(1, 1_700_000_000.0, MSG, "alice", "old news", "", 5),
            Record(2, 1_700_000_000.0 + DAY, DM, "alice", "psst ✓", "bob", 5),
            Record(3, 1_700_000_000.0 + DAY, HIDDEN, "", ""),
        ],
    )
    r = mtlschat_cli("history", "export", "--history", path)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows[0] == {
        "room": "main",
        "offset": 1,
        "ts": 1_700_000_000.0,
        "time": "2023-11-14T22:13:20+00:00",
        "kind": "msg",
        "from": "alice",
        "text": "old news",
    }
    assert rows[1]["to"] == "bob" and rows[1]["text"] == "psst ✓"
    assert rows[2] == {"room": "main", "offset": 3, "ts": rows[2]["ts"], "time": rows[2]["time"],
                       "kind": "hidden"}  # fmt: skip
    r = mtlschat_cli("history", "export", "--history", path, "--since", "2023-11-15")
    assert [json.loads(line)["offset"] for line in r.stdout.splitlines()] == [2, 3]
    r = mtlschat_cli("history", "export", "--history", path, "--since", "1d")
    assert (r.returncode, r.stdout) == (0, "")  # nothing in the last day
    store.close()


def test_export_errors_are_one_line(tmp_path: Path, mtlschat_cli: CLIRunner) -> None:
    r = mtlschat_cli("history", "export", "--history", tmp_path / "none.db")
    assert (r.returncode, r.stderr) == (
        1,
        f"mtlschat: error: history file {tmp_path / 'none.db'} does not exist\n",
    )
    SQLiteStore.open(tmp_path / "h.db").close()
    r = mtlschat_cli("history", "export", "--history", tmp_path / "h.db", "--since", "yesterday")
    assert r.returncode == 1 and r.stderr.startswith("mtlschat: error: bad --since 'yesterday'")
    assert r.stderr.count("\n") == 1
