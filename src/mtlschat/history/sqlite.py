"""The embedded history store: one SQLite file in WAL mode, with FTS5 for ``/search``.

Crash safety: each round's lines go in one transaction, committed before the round's output is
written to any socket, so after ``kill -9`` every line a member saw is in the file (WAL with
``synchronous=NORMAL``: a commit is a ``write()`` to the WAL, durable across a process crash;
only a power loss can take the last commits back, never corrupt the file).

One writer: a server holds an exclusive ``flock`` on ``PATH.lock`` for as long as it runs (the
kernel drops it if the process dies), so a second server on the same file refuses to start.
Readers (``mtlschat history export``) need no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from mtlschat.history.store import (
    DM,
    HIDDEN,
    HistoryError,
    Record,
    StoreBusy,
    StoreIOError,
    search_terms,
)

APPLICATION_ID = 0x6D746C68  # "mtlh": marks the file as an mtlschat history (PRAGMA application_id)
SCHEMA_VERSION = 3
# Version 2 differs only in its search index (which kept each line's size): opening it as the
# writer rebuilds the index behind the writes, as for new lines (_upgrade).
UPGRADABLE = 2
SEARCH_CATCH_UP = 5000  # a search first indexes up to this many not-yet-indexed lines
INSERT_ROWS = (64, 8)  # lines per INSERT statement of a round (see SQLiteStore._write)

# Filled behind the writes (see SQLiteStore.trim): indexing in batches of hundreds costs a
# seventh of indexing each round's few lines at commit time. detail=none: words only (no
# phrases, no NEAR), a third cheaper to build; columnsize=0: no per-line size row (it only serves
# ranking, and results come newest first): 40% cheaper again.
_FTS = """
CREATE VIRTUAL TABLE lines_fts USING fts5(
    body, content='lines', content_rowid='id', tokenize='unicode61 remove_diacritics 2',
    detail=none, columnsize=0
);
"""

_SCHEMA = (
    """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
-- rid: the room's number in line ids; last_offset: kept for a room whose lines retention removed;
-- indexed: the room's lines up to this offset are in lines_fts.
CREATE TABLE rooms(
    name TEXT PRIMARY KEY,
    rid INTEGER NOT NULL UNIQUE,
    last_offset INTEGER NOT NULL DEFAULT 0,
    indexed INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
-- id = rid << 40 | offset: one b-tree, in (room, offset) order, no second index to keep.
CREATE TABLE lines(
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL COLLATE NOCASE,
    body TEXT NOT NULL,
    recipient TEXT NOT NULL DEFAULT '' COLLATE NOCASE,
    origin INTEGER NOT NULL DEFAULT 0
);
"""
    + _FTS
)

ROOM_BITS = 40  # offsets per room: up to 2**40 (a million lines a second for 12 days... x 1000)
# The order of Record's fields; :base is the room's rid << ROOM_BITS.
_COLUMNS = "id - :base, ts, kind, sender, body, recipient, origin"
_RANGE = "id > :base + :after AND id < :base + :span"  # a room's lines after offset :after
# A viewer may read room lines, and DMs they sent or received (names compare case-insensitively).
_VISIBLE = f"kind != '{HIDDEN}' AND (kind != '{DM}' OR sender = :viewer OR recipient = :viewer)"

# SQLite's result codes for "this file is damaged" and "this is not a database".
_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


def _record(row: tuple[int, float, str, str, str, str, int]) -> Record:
    return Record(*row)


def _why(exc: sqlite3.Error) -> str:
    return str(exc) or type(exc).__name__


def _is_corrupt(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.split("_(")[0] in _CORRUPT or "malformed" in str(exc)


class SQLiteStore:
    """The :class:`~mtlschat.history.store.HistoryStore` in one SQLite file.

    ``max_age`` (seconds) and ``max_lines`` (per room) bound what is kept; 0 means no bound.
    Open it with :meth:`open` (the writer, one per file) or :meth:`open_reader`.
    """

    def __init__(
        self,
        path: Path,
        db: sqlite3.Connection,
        epoch: str,
        *,
        lock_fd: int | None,
        max_age: float = 0.0,
        max_lines: int = 0,
    ) -> None:
        self.path = path
        self._db = db
        self._epoch = epoch
        self._lock_fd = lock_fd
        self.max_age = max_age
        self.max_lines = max_lines
        # Per room: [rid, last offset, indexed offset]. A room's last offset is its highest
        # stored line's, or what ``rooms`` kept when retention removed them all (trim() writes
        # ``rooms``, so a commit is one insert and nothing else).
        self._rooms: dict[str, list[int]] = {}
        self._load_rooms()
        self._inserts: dict[tuple[int, int], str] = {}

    def _load_rooms(self) -> None:
        db = self._db
        for name, rid, last, indexed in db.execute(
            "SELECT name, rid, last_offset, indexed FROM rooms"
        ).fetchall():
            top = db.execute(
                "SELECT max(id) FROM lines WHERE id >= ? AND id < ?",
                (rid << ROOM_BITS, (rid + 1) << ROOM_BITS),
            ).fetchone()[0]
            stored = top - (rid << ROOM_BITS) if top is not None else 0
            self._rooms[name] = [rid, max(last, stored), indexed]

    # ---- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, max_age: float = 0.0, max_lines: int = 0) -> SQLiteStore:
        """Open (creating it on first use) the history file as its one writer.

        Raises :class:`StoreBusy` if another server holds it, :class:`HistoryError` with a
        one-line reason naming the file if it is not writable, not an mtlschat history, or damaged.
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise HistoryError(f"history file {path}: directory {path.parent} does not exist")
        lock_fd = _lock(path)
        try:
            db = _connect(path, readonly=False)
            try:
                epoch = _prepare(path, db)
                return cls(path, db, epoch, lock_fd=lock_fd, max_age=max_age, max_lines=max_lines)
            except BaseException:
                db.close()
                raise
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def open_reader(cls, path: Path) -> SQLiteStore:
        """Open an existing history file to read it (export) while a server may be writing it."""
        path = Path(path)
        if not path.is_file():
            raise HistoryError(f"history file {path} does not exist")
        db = _connect(path, readonly=True)
        try:
            epoch = _check(path, db)
            if epoch is None:
                raise HistoryError(f"{path} is not an mtlschat history file (it is empty)")
            return cls(path, db, epoch, lock_fd=None)
        except sqlite3.Error as exc:
            db.close()
            raise _open_error(path, exc) from None
        except BaseException:
            db.close()
            raise

    # ---- the HistoryStore interface ----------------------------------------------------------

    @property
    def epoch(self) -> str:
        """The random id created with this file."""
        return self._epoch

    @property
    def location(self) -> str:
        """The file's path."""
        return str(self.path)

    def last_offset(self, room: str) -> int:
        """The last offset stored in ``room`` (kept across retention: never goes back)."""
        known = self._rooms.get(room)
        return known[1] if known is not None else 0

    def _params(self, room: str, **more: object) -> dict[str, object] | None:
        known = self._rooms.get(room)
        if known is None:
            return None
        return {"base": known[0] << ROOM_BITS, "span": 1 << ROOM_BITS, **more}

    def append(self, room: str, records: Sequence[Record]) -> None:
        """One transaction for a round's lines; raises :class:`StoreIOError` if it fails."""
        if not records:
            return
        last = self.last_offset(room)
        if records[0].offset <= last or records[-1].offset >= 1 << ROOM_BITS:
            raise ValueError(f"offset {records[0].offset} in room {room!r} does not follow {last}")
        db = self._db
        known = self._rooms.get(room)
        try:
            db.execute("BEGIN")
            if known is None:  # a new room: its number
                rid = 1 + (db.execute("SELECT max(rid) FROM rooms").fetchone()[0] or 0)
                db.execute("INSERT INTO rooms(name, rid) VALUES (?, ?)", (room, rid))
            else:
                rid = known[0]
            self._write(rid, records)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise StoreIOError(f"cannot write history file {self.path}: {_why(exc)}") from None
        if known is None:
            self._rooms[room] = known = [rid, 0, 0]
        known[1] = records[-1].offset

    def _write(self, rid: int, records: Sequence[Record]) -> None:
        """Insert a round's lines: INSERTs of 64 lines, then of 8, then one by one. A statement
        step costs the same for one line as for 64 (bindings checked, the GIL and SQLite's mutex
        released and taken back): in a burst, lines cost half the CPU of one step each."""
        db = self._db
        done, n = 0, len(records)
        for rows in INSERT_ROWS:
            if n - done >= rows:
                sql = self._insert(rid, rows)
                stop = n - (n - done) % rows
                for i in range(done, stop, rows):
                    db.execute(sql, list(chain.from_iterable(records[i : i + rows])))
                done = stop
        if done < n:
            db.executemany(self._insert(rid, 1), records[done:] if done else records)

    def _insert(self, rid: int, rows: int) -> str:
        # The room's base inlined, so the records' fields are bound as they are; sqlite3 caches
        # the statements (a few per room).
        key = (rid, rows)
        sql = self._inserts.get(key)
        if sql is None:
            base = rid << ROOM_BITS

            def values(n: int) -> str:  # one record's 8 fields, bound as ?n+1 .. ?n+8
                # ?n+8 is Record.node (not stored: one file is one node's): bound, never NULL.
                return (
                    f"({base} + ?{n + 1}, ?{n + 2}, ?{n + 3}, ?{n + 4}, ?{n + 5}, ?{n + 6},"
                    f" coalesce(?{n + 7}, ?{n + 8}))"
                )

            sql = self._inserts[key] = (
                "INSERT INTO lines(id, ts, kind, sender, body, recipient, origin) VALUES "
                + ", ".join(values(i * 8) for i in range(rows))
            )
        return sql

    def since(self, room: str, after: int, limit: int, viewer: str) -> list[Record]:
        """Up to ``limit`` lines after offset ``after``, oldest first; others' DMs redacted."""
        params = self._params(room, after=after, limit=limit)
        if params is None:
            return []
        rows = self._query(
            f"SELECT {_COLUMNS} FROM lines WHERE {_RANGE} ORDER BY id LIMIT :limit", params
        )
        key = viewer.casefold()
        return [_record(row).for_viewer(key) for row in rows]

    def last(self, room: str, count: int, viewer: str) -> list[Record]:
        """The last ``count`` lines ``viewer`` may read, oldest first."""
        params = self._params(room, after=0, viewer=viewer, count=count)
        if params is None:
            return []
        rows = self._query(
            f"SELECT {_COLUMNS} FROM lines WHERE {_RANGE} AND {_VISIBLE}"
            " ORDER BY id DESC LIMIT :count",
            params,
        )
        return [_record(row) for row in reversed(rows)]

    def search(self, room: str, words: str, limit: int, viewer: str) -> list[Record]:
        """The last ``limit`` readable lines containing every word (as a prefix), oldest first."""
        terms = search_terms(words)
        query = " ".join(f'"{t}"*' for t in terms)
        params = self._params(room, after=0, viewer=viewer, limit=limit, query=query)
        if not terms or params is None:
            return []
        db = self._db
        try:  # the lines of the last second are not indexed yet
            db.execute("BEGIN")
            self._index(SEARCH_CATCH_UP)
            db.execute("COMMIT")
        except sqlite3.Error:  # (a full disk): search what is indexed
            self._rollback()
        rows = self._query(
            f"SELECT {_COLUMNS} FROM lines WHERE id IN"
            " (SELECT rowid FROM lines_fts WHERE lines_fts MATCH :query)"
            f" AND {_RANGE} AND {_VISIBLE} ORDER BY id DESC LIMIT :limit",
            params,
        )
        return [_record(row) for row in reversed(rows)]

    def _query(self, sql: str, params: Sequence[object] | dict[str, object]) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreIOError(f"cannot read history file {self.path}: {_why(exc)}") from None

    def trim(self, now: float, budget: int) -> int:
        """Index up to ``budget`` new lines for search, then delete (with what is left of the
        budget, at least a quarter) the oldest lines past ``max_age`` or ``max_lines``; return
        how many were deleted.

        Called about once a second: each call is one short transaction, so no pause is long.
        """
        if budget <= 0 or not self._rooms:
            return 0
        db = self._db
        deleted = 0
        try:
            db.execute("BEGIN")
            # One budget for both: indexing first (search must see every line), deleting gets
            # the rest but never less than a quarter, so retention keeps up in a busy room.
            budget = max(budget // 4, budget - self._index(budget))
            for known in self._rooms.values():
                rid, last, indexed = known
                lo = rid << ROOM_BITS
                # Only indexed lines go (the index must be told what it loses), oldest first.
                if self.max_age and deleted < budget:
                    # Among the oldest lines only: ts grows with the offset, and a scan of a big
                    # room for old lines that are not there would be the long pause to avoid.
                    deleted += self._delete(
                        "SELECT id FROM (SELECT id, ts FROM lines WHERE id > ? AND id <= ?"
                        " ORDER BY id LIMIT ?) WHERE ts < ?",
                        (lo, lo + indexed, budget - deleted, now - self.max_age),
                    )
                if self.max_lines and deleted < budget:
                    deleted += self._delete(
                        "SELECT id FROM lines WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                        (lo, lo + min(indexed, last - self.max_lines), budget - deleted),
                    )
            db.executemany(
                "UPDATE rooms SET last_offset = ?, indexed = ? WHERE rid = ?",
                [(last, indexed, rid) for rid, last, indexed in self._rooms.values()],
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreIOError(f"cannot trim history file {self.path}: {_why(exc)}") from None
        return deleted

    def _rollback(self) -> None:
        # _index() moved the rooms' indexed marks ahead in memory: take them back from the file,
        # or the next trim would tell the index to forget lines it never had.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.Error):
            self._load_rooms()

    def _index(self, budget: int) -> int:
        """Add up to ``budget`` new lines to the search index (in the caller's transaction)."""
        db = self._db
        done = 0
        for known in self._rooms.values():
            rid, last, indexed = known
            if done >= budget or indexed >= last:
                continue
            lo = rid << ROOM_BITS
            top = min(last, indexed + budget - done)
            db.execute(
                "INSERT INTO lines_fts(rowid, body) SELECT id, body FROM lines"
                f" WHERE id > ? AND id <= ? AND kind != '{HIDDEN}'",
                (lo + indexed, lo + top),
            )
            done += top - indexed
            known[2] = top
        return done

    def _delete(self, select: str, params: Sequence[object]) -> int:
        """Delete the lines ``select`` picks and their search-index entries (all indexed)."""
        db = self._db
        ids = [row[0] for row in db.execute(select, params)]
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        db.execute(
            "INSERT INTO lines_fts(lines_fts, rowid, body) SELECT 'delete', id, body FROM lines"
            f" WHERE id IN ({marks}) AND kind != '{HIDDEN}'",
            ids,
        )
        db.execute(f"DELETE FROM lines WHERE id IN ({marks})", ids)
        return len(ids)

    def close(self) -> None:
        """Close the database and release the writer's lock."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- for operators -------------------------------------------------------------------------

    def rooms(self) -> list[str]:
        """The rooms that have had lines."""
        return sorted(self._rooms)

    def export(self, room: str, since_ts: float = 0.0) -> Iterator[Record]:
        """Every stored line of ``room`` from ``since_ts`` on, oldest first, DMs included."""
        if self._lock_fd is None:
            self._load_rooms()  # a reader: the writer may have added rooms since it opened
        params = self._params(room, after=0, since=since_ts)
        if params is None:
            return
        cur = self._db.execute(
            f"SELECT {_COLUMNS} FROM lines WHERE {_RANGE} AND ts >= :since ORDER BY id", params
        )
        while rows := cur.fetchmany(1000):
            yield from map(_record, rows)


# ---- opening, checking, creating ---------------------------------------------------------------


def _lock(path: Path) -> int:
    """Take the one-writer lock (``PATH.lock``, holding our pid); raise StoreBusy if held."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise HistoryError(f"cannot create {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StoreBusy(
            f"history file {path} is in use by another mtlschat server (pid {holder});"
            " one server per history file"
        ) from None
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}?mode=rwc"
    # Autocommit (transactions are explicit); used by one thread at a time (the loop's), but an
    # in-process server is built on one thread and served from another.
    try:
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise HistoryError(f"cannot open history file {path}: {_why(exc)}") from None


def _check(path: Path, db: sqlite3.Connection) -> str | None:
    """The epoch of an mtlschat history; None for an empty file; HistoryError for anything else."""
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    if app_id == 0 and tables == 0:
        return None
    if app_id != APPLICATION_ID:
        raise HistoryError(f"{path} is an SQLite database but not an mtlschat history file")
    if version not in (SCHEMA_VERSION, UPGRADABLE):
        newer = "a newer" if version > SCHEMA_VERSION else "an older test"
        raise HistoryError(
            f"{path} was written by {newer} mtlschat (history schema {version}, this one reads"
            f" {SCHEMA_VERSION}); move it aside to start a new history"
        )
    found = db.execute("PRAGMA quick_check").fetchone()[0]
    if found != "ok":
        raise HistoryError(f"history file {path} is damaged ({found}); {_RECOVER.format(path)}")
    row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
    if row is None:
        raise HistoryError(f"history file {path} has no epoch; {_RECOVER.format(path)}")
    return str(row[0])


_RECOVER = (
    "move it aside to start a new history, or try `sqlite3 {0} .recover | sqlite3 {0}.recovered`"
)


def _prepare(path: Path, db: sqlite3.Connection) -> str:
    """Check or create the schema, switch to WAL, prove the file writable; return the epoch."""
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        epoch = _check(path, db)
        db.execute("PRAGMA synchronous=NORMAL")
        if epoch is not None and db.execute("PRAGMA user_version").fetchone()[0] == UPGRADABLE:
            _upgrade(db)
        if epoch is None:
            epoch = secrets.token_hex(8)
            # One transaction: a crash leaves either no history or a complete empty one.
            db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA}"
                f"PRAGMA application_id = {APPLICATION_ID};"
                f"PRAGMA user_version = {SCHEMA_VERSION};"
                f"INSERT INTO meta VALUES ('epoch', '{epoch}');"
                f"INSERT INTO meta VALUES ('created', '{time.time()!r}'); COMMIT;"
            )
        db.execute("BEGIN IMMEDIATE")
        # A write now, so a read-only file or directory is refused at startup, not mid-chat.
        db.execute("INSERT OR REPLACE INTO meta VALUES ('opened', ?)", (repr(time.time()),))
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise _open_error(path, exc) from None
    if str(mode).lower() != "wal":
        raise HistoryError(f"history file {path}: cannot use WAL mode (got {mode})")
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)  # what members said, DMs included: for the server's user only
    return epoch


def _upgrade(db: sqlite3.Connection) -> None:
    """Schema 2 to 3 in one transaction: a new search index, which the upkeep fills again."""
    db.executescript(
        f"BEGIN IMMEDIATE; DROP TABLE lines_fts; {_FTS} UPDATE rooms SET indexed = 0;"
        f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    )


def _open_error(path: Path, exc: sqlite3.Error) -> HistoryError:
    text = _why(exc)
    if "not a database" in text:
        return HistoryError(f"{path} is not an mtlschat history file (not an SQLite database)")
    if _is_corrupt(exc):
        return HistoryError(f"history file {path} is damaged ({text}); {_RECOVER.format(path)}")
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return HistoryError(f"history file {path} is not writable ({text})")
    return HistoryError(f"cannot use history file {path}: {text}")
