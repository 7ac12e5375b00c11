"""The SQLite history store on real files: offsets, epoch, DMs, search, retention, faults."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtlschat.history.sqlite import SQLiteStore
from mtlschat.history.store import DM, HIDDEN, MSG, HistoryError, Record, StoreBusy

ROOM = "main"


def lines(first: int, count: int, ts: float = 1_700_000_000.0, **kw: object) -> list[Record]:
    return [
        Record(i, ts + i, str(kw.get("kind", MSG)), str(kw.get("sender", "alice")), f"line {i}")
        for i in range(first, first + count)
    ]


def test_created_on_first_open_and_offsets_and_epoch_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = SQLiteStore.open(path)
    epoch = store.epoch
    assert store.last_offset(ROOM) == 0
    store.append(ROOM, lines(1, 5))
    store.append(ROOM, lines(6, 3))
    store.close()
    assert path.stat().st_mode & 0o777 == 0o600  # members' words, DMs included

    again = SQLiteStore.open(path)
    assert again.epoch == epoch
    assert again.last_offset(ROOM) == 8
    assert again.last_offset("other") == 0  # keyed by room
    with pytest.raises(ValueError):
        again.append(ROOM, lines(8, 1))  # a duplicate offset is a bug, never stored
    assert [r.offset for r in again.since(ROOM, 0, 100, "bob")] == list(range(1, 9))
    again.close()


def test_rounds_of_any_size_are_stored_field_for_field(tmp_path: Path) -> None:
    # A round goes in by statements of 64 lines, then 8, then one by one: every size comes back.
    store = SQLiteStore.open(tmp_path / "h.db")
    sent: list[Record] = []
    for size in (1, 7, 8, 9, 63, 64, 65, 72, 130, 200):
        first = len(sent) + 1
        rnd = [
            Record(i, 1e9 + i / 7, DM if i % 5 == 0 else MSG, f"u{i % 3}", f"text {i}", f"v{i}"
                   if i % 5 == 0 else "", i * 1_000_003)
            for i in range(first, first + size)
        ]  # fmt: skip
        store.append(ROOM, rnd)
        sent += rnd
    assert store.last_offset(ROOM) == len(sent)
    assert list(store.export(ROOM)) == sent
    store.close()


def test_a_new_file_has_a_new_epoch(tmp_path: Path) -> None:
    a = SQLiteStore.open(tmp_path / "a.db")
    b = SQLiteStore.open(tmp_path / "b.db")
    assert a.epoch != b.epoch
    a.close()
    b.close()


def test_dms_are_only_returned_to_their_sender_and_recipient(tmp_path: Path) -> None:
    store = SQLiteStore.open(tmp_path / "h.db")
    store.append(
        ROOM,
        [
            Record(1, 1.0, MSG, "alice", "hello all"),
            Record(2, 2.0, DM, "alice", "secret plans", "Bob"),
            Record(3, 3.0, MSG, "carol", "hi"),
            Record(4, 4.0, HIDDEN, "", ""),  # a DM with DM storage off
        ],
    )
    for viewer in ("alice", "BOB"):
        assert [r.offset for r in store.last(ROOM, 10, viewer)] == [1, 2, 3]
        assert [r.text for r in store.search(ROOM, "secret", 10, viewer)] == ["secret plans"]
    assert [r.offset for r in store.last(ROOM, 10, "carol")] == [1, 3]
    assert store.search(ROOM, "secret", 10, "carol") == []
    # Replay keeps the offsets (so a reader can tell nothing is missing), never the text.
    seen = store.since(ROOM, 0, 10, "carol")
    assert [(r.offset, r.kind, r.sender, r.text, r.to) for r in seen[1:]] == [
        (2, HIDDEN, "", "", ""),
        (3, MSG, "carol", "hi", ""),
        (4, HIDDEN, "", "", ""),
    ]
    store.close()


def test_search_matches_all_words_as_prefixes_and_survives_odd_input(tmp_path: Path) -> None:
    store = SQLiteStore.open(tmp_path / "h.db")
    store.append(
        ROOM,
        [
            Record(1, 1.0, MSG, "alice", "Deploying the new release tonight"),
            Record(2, 2.0, MSG, "bob", "release notes are ready"),
            Record(3, 3.0, MSG, "carol", "Café au lait"),
        ],
    )
    assert [r.offset for r in store.search(ROOM, "release", 10, "x")] == [1, 2]
    assert [r.offset for r in store.search(ROOM, "deploy RELEASE", 10, "x")] == [1]
    assert [r.offset for r in store.search(ROOM, "cafe", 10, "x")] == [3]  # diacritics folded
    assert [r.offset for r in store.search(ROOM, "release", 1, "x")] == [2]  # the latest ones
    for odd in ('"', "AND OR NOT", "*", "(", "NEAR(", "a:b", ""):
        store.search(ROOM, odd, 10, "x")  # FTS5 syntax never reaches the engine raw
    store.close()


def test_a_schema_2_file_is_read_and_upgraded_with_its_search_index_rebuilt(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.db"
    store = SQLiteStore.open(path, max_lines=150)
    store.append(ROOM, lines(1, 200))
    assert len(store.search(ROOM, "line", 1000, "x")) == 200
    store.close()
    db = sqlite3.connect(path, isolation_level=None)  # as schema 2 made it
    db.executescript(
        "BEGIN; DROP TABLE lines_fts; CREATE VIRTUAL TABLE lines_fts USING fts5(body,"
        " content='lines', content_rowid='id', tokenize='unicode61 remove_diacritics 2',"
        " detail=none); INSERT INTO lines_fts(lines_fts) VALUES ('rebuild');"
        " PRAGMA user_version = 2; COMMIT;"
    )
    db.close()
    reader = SQLiteStore.open_reader(path)  # export reads it as it is
    assert len(list(reader.export(ROOM))) == 200
    reader.close()

    store = SQLiteStore.open(path, max_lines=150)
    assert len(store.search(ROOM, "line", 1000, "x")) == 200  # indexed again before searching
    while store.trim(time.time(), 1000):  # retention tells the new index what it deletes
        pass
    assert [r.offset for r in store.search(ROOM, "line", 1000, "x")] == list(range(51, 201))
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_schema")}
    assert "lines_fts" in tables and "lines_fts_docsize" not in tables  # columnsize=0
    db.execute("INSERT INTO lines_fts(lines_fts) VALUES ('integrity-check')")  # raises if not
    db.close()


def test_retention_by_count_and_age_trims_in_bounded_steps(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = SQLiteStore.open(path, max_lines=100)
    for first in range(1, 1001, 50):
        store.append(ROOM, lines(first, 50))
    assert 0 < store.trim(time.time(), 300) <= 300  # no more than asked in one call
    while store.trim(time.time(), 300):
        pass
    assert [r.offset for r in store.since(ROOM, 0, 1000, "x")] == list(range(901, 1001))
    assert store.search(ROOM, "line", 1000, "x")[0].offset == 901  # the index follows
    store.close()

    store = SQLiteStore.open(path, max_age=3600)
    now = 1_700_000_000.0 + 950 + 3600  # lines 1..949 are older than an hour
    while store.trim(now, 40):
        pass
    assert store.since(ROOM, 0, 1000, "x")[0].offset == 950
    store.append(ROOM, lines(1001, 1))  # offsets continue after trimming
    store.close()
    assert SQLiteStore.open(path).last_offset(ROOM) == 1001


def test_offsets_continue_even_when_retention_removed_every_line(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = SQLiteStore.open(path, max_age=1)
    store.append(ROOM, lines(1, 10, ts=100.0))
    while store.trim(10_000.0, 100):
        pass
    assert store.since(ROOM, 0, 100, "x") == []
    store.close()
    assert SQLiteStore.open(path).last_offset(ROOM) == 10


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    first = SQLiteStore.open(path)
    with pytest.raises(StoreBusy, match=rf"{path} is in use by another mtlschat server \(pid"):
        SQLiteStore.open(path)
    reader = SQLiteStore.open_reader(path)  # export works while the server runs
    first.append(ROOM, lines(1, 3))
    assert [r.offset for r in reader.export(ROOM)] == [1, 2, 3]
    reader.close()
    first.close()
    SQLiteStore.open(path).close()


def test_the_lock_dies_with_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    code = (
        "import sys, time; from pathlib import Path; from mtlschat.history.sqlite import "
        "SQLiteStore; SQLiteStore.open(Path(sys.argv[1])); print('open', flush=True); "
        "time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"open\n"
        with pytest.raises(StoreBusy, match=f"pid {proc.pid}"):
            SQLiteStore.open(path)
    finally:
        proc.kill()
        proc.wait()
    SQLiteStore.open(path).close()


def test_a_file_that_is_not_a_history_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database\n" * 100)
    with pytest.raises(HistoryError, match=rf"^{text} is not an mtlschat history file"):
        SQLiteStore.open(text)
    assert text.read_text().startswith("hello")  # untouched

    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t(x)")
    db.commit()
    db.close()
    with pytest.raises(HistoryError, match="an SQLite database but not an mtlschat history"):
        SQLiteStore.open(other)


def test_a_missing_directory_or_unwritable_place_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="does not exist"):
        SQLiteStore.open(tmp_path / "nope" / "h.db")
    # /proc refuses new files even to root
    with pytest.raises(HistoryError, match=r"/proc/h\.db"):
        SQLiteStore.open(Path("/proc/h.db"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a read-only file")
def test_a_read_only_history_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    SQLiteStore.open(path).close()
    path.chmod(0o400)
    with pytest.raises(HistoryError, match="not writable"):
        SQLiteStore.open(path)


def test_a_truncated_file_is_refused_with_a_message_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = SQLiteStore.open(path)
    for first in range(1, 3001, 100):
        store.append(ROOM, lines(first, 100))
    store.trim(time.time(), 5000)
    store.close()  # (checkpoints the WAL into the file)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(HistoryError, match=rf"history file {path} is damaged") as info:
        SQLiteStore.open(path)
    assert "\n" not in str(info.value)


def test_a_crash_between_commits_keeps_every_committed_round(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    code = (
        "import sys, os; from pathlib import Path; from mtlschat.history.sqlite import "
        "SQLiteStore; from mtlschat.history.store import Record\n"
        "s = SQLiteStore.open(Path(sys.argv[1]))\n"
        "for i in range(1, 201):\n"
        "    s.append('main', [Record(i * 3 + k - 2, 1.0, 'msg', 'a', 'x') for k in range(3)])\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], check=False)
    assert proc.returncode == -9
    store = SQLiteStore.open(path)
    assert store.last_offset(ROOM) == 600
    assert [r.offset for r in store.since(ROOM, 0, 1000, "x")] == list(range(1, 601))
    store.close()


def test_rooms_keep_their_own_offsets_search_and_retention(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = SQLiteStore.open(path, max_lines=5)
    for first in (1, 11, 21):
        store.append("main", lines(first, 10))
        store.append("ops", lines(first, 10, sender="bob"))
    store.append("main", lines(31, 1))
    while store.trim(time.time(), 7):
        pass
    assert [r.offset for r in store.since("main", 0, 100, "x")] == [27, 28, 29, 30, 31]
    assert [r.offset for r in store.since("ops", 0, 100, "x")] == [26, 27, 28, 29, 30]
    assert {r.sender for r in store.search("ops", "line", 100, "x")} == {"bob"}
    assert [r.offset for r in store.search("main", "line", 100, "x")] == [27, 28, 29, 30, 31]
    store.close()
    again = SQLiteStore.open(path)
    assert (again.last_offset("main"), again.last_offset("ops"), again.rooms()) == (
        31,
        30,
        ["main", "ops"],
    )
    again.close()
