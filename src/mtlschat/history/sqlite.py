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
SCHEMA_VERSION = 1
SEARCH_CATCH_UP = 5000  # a search first indexes up to this many not-yet-indexed lines

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE rooms(name TEXT PRIMARY KEY, last_offset INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE lines(
    id INTEGER PRIMARY KEY,
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL COLLATE NOCASE,
    body TEXT NOT NULL,
    recipient TEXT NOT NULL DEFAULT '' COLLATE NOCASE,
    origin INTEGER NOT NULL DEFAULT 0,
    UNIQUE(room, seq)
);
-- Filled behind the writes (see SQLiteStore.trim): indexing in batches of hundreds costs a
-- seventh of indexing each round's few lines at commit time.
CREATE VIRTUAL TABLE lines_fts USING fts5(
    body, content='lines', content_rowid='id', tokenize='unicode61 remove_diacritics 2',
    detail=none  -- words only (no phrases, no NEAR): a third cheaper to build
);
"""

_COLUMNS = "seq, ts, kind, sender, body, recipient, origin"  # the order of Record's fields
_INSERT = f"INSERT INTO lines(room, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
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
        # A room's last offset is its highest stored line's; ``rooms`` keeps it for a room whose
        # lines retention removed (written by trim(), so a commit is one insert and no update).
        self._last: dict[str, int] = dict(db.execute("SELECT name, last_offset FROM rooms"))
        for room, top in db.execute("SELECT room, max(seq) FROM lines GROUP BY room"):
            self._last[room] = max(top, self._last.get(room, 0))
        row = db.execute("SELECT value FROM meta WHERE key = 'indexed'").fetchone()
        self._indexed = int(row[0]) if row else 0  # lines with id <= this are in lines_fts
        self._inserts: dict[str, str] = {}

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
        return self._last.get(room, 0)

    def append(self, room: str, records: Sequence[Record]) -> None:
        """One transaction for a round's lines; raises :class:`StoreIOError` if it fails."""
        if not records:
            return
        last = self._last.get(room, 0)
        if records[0].offset <= last:
            raise ValueError(f"offset {records[0].offset} in room {room!r} does not follow {last}")
        db = self._db
        try:
            db.execute("BEGIN")
            db.executemany(self._insert(room), records)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise StoreIOError(f"cannot write history file {self.path}: {_why(exc)}") from None
        self._last[room] = records[-1].offset

    def _insert(self, room: str) -> str:
        # The room inlined as a literal, so the records go to executemany as they are (no copy
        # per row); sqlite3 caches the statement per room.
        sql = self._inserts.get(room)
        if sql is None:
            literal = "'" + room.replace("'", "''") + "'"
            sql = self._inserts[room] = _INSERT.replace("VALUES (?, ", f"VALUES ({literal}, ")
        return sql

    def since(self, room: str, after: int, limit: int, viewer: str) -> list[Record]:
        """Up to ``limit`` lines after offset ``after``, oldest first; others' DMs redacted."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM lines WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?",
            (room, after, limit),
        )
        key = viewer.casefold()
        return [_record(row).for_viewer(key) for row in rows]

    def last(self, room: str, count: int, viewer: str) -> list[Record]:
        """The last ``count`` lines ``viewer`` may read, oldest first."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM lines WHERE room = :room AND {_VISIBLE}"
            " ORDER BY seq DESC LIMIT :count",
            {"room": room, "viewer": viewer, "count": count},
        )
        return [_record(row) for row in reversed(rows)]

    def search(self, room: str, words: str, limit: int, viewer: str) -> list[Record]:
        """The last ``limit`` readable lines containing every word (as a prefix), oldest first."""
        terms = search_terms(words)
        if not terms:
            return []
        query = " ".join(f'"{t}"*' for t in terms)
        db = self._db
        try:  # the lines of the last second are not indexed yet
            db.execute("BEGIN")
            self._index(SEARCH_CATCH_UP)
            db.execute("COMMIT")
        except sqlite3.Error:  # (a full disk): search what is indexed
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        rows = self._query(
            f"SELECT {_COLUMNS} FROM lines WHERE id IN"
            " (SELECT rowid FROM lines_fts WHERE lines_fts MATCH :query)"
            f" AND room = :room AND {_VISIBLE} ORDER BY seq DESC LIMIT :limit",
            {"query": query, "room": room, "viewer": viewer, "limit": limit},
        )
        return [_record(row) for row in reversed(rows)]

    def _query(self, sql: str, params: Sequence[object] | dict[str, object]) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreIOError(f"cannot read history file {self.path}: {_why(exc)}") from None

    def trim(self, now: float, budget: int) -> int:
        """Index up to ``budget`` new lines for search, then delete at most ``budget`` of the
        oldest lines past ``max_age`` or ``max_lines``; return how many were deleted.

        Called about once a second: each call is one short transaction, so no pause is long.
        """
        if budget <= 0:
            return 0
        db = self._db
        deleted = 0
        try:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO rooms(name, last_offset) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET last_offset = excluded.last_offset",
                self._last.items(),
            )
            self._index(budget)
            if self.max_age:
                # Among the oldest lines only: ts grows with id, and an unindexed scan of a big
                # table for old lines that are not there would be the long pause to avoid.
                deleted += self._delete(
                    "SELECT id FROM lines WHERE id <= :done AND id IN"
                    " (SELECT id FROM lines ORDER BY id LIMIT :n) AND ts < :cut",
                    {"n": budget, "cut": now - self.max_age},
                )
            if self.max_lines:
                for room, last in self._last.items():
                    if deleted >= budget:
                        break
                    deleted += self._delete(
                        "SELECT id FROM lines WHERE room = :room AND seq <= :cut AND id <= :done"
                        " ORDER BY seq LIMIT :n",
                        {"room": room, "cut": last - self.max_lines, "n": budget - deleted},
                    )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise StoreIOError(f"cannot trim history file {self.path}: {_why(exc)}") from None
        return deleted

    def _index(self, budget: int) -> int:
        """Add up to ``budget`` lines to the search index (inside the caller's transaction)."""
        db = self._db
        found = db.execute(
            "SELECT max(id) FROM (SELECT id FROM lines WHERE id > ? ORDER BY id LIMIT ?)",
            (self._indexed, budget),
        ).fetchone()[0]
        if found is None:
            return 0
        top = int(found)
        db.execute(
            "INSERT INTO lines_fts(rowid, body) SELECT id, body FROM lines"
            f" WHERE id > ? AND id <= ? AND kind != '{HIDDEN}'",
            (self._indexed, top),
        )
        db.execute("INSERT OR REPLACE INTO meta VALUES ('indexed', ?)", (str(top),))
        done, self._indexed = top - self._indexed, top
        return done

    def _delete(self, select: str, params: dict[str, object]) -> int:
        """Delete the lines ``select`` picks, and their search-index entries (all indexed)."""
        db = self._db
        ids = [row[0] for row in db.execute(select, {**params, "done": self._indexed})]
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
        return sorted(self._last)

    def export(self, room: str, since_ts: float = 0.0) -> Iterator[Record]:
        """Every stored line of ``room`` from ``since_ts`` on, oldest first, DMs included."""
        cur = self._db.execute(
            f"SELECT {_COLUMNS} FROM lines WHERE room = ? AND ts >= ? ORDER BY seq",
            (room, since_ts),
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
    if version > SCHEMA_VERSION:
        raise HistoryError(f"{path} was written by a newer mtlschat (history schema {version})")
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


def _open_error(path: Path, exc: sqlite3.Error) -> HistoryError:
    text = _why(exc)
    if "not a database" in text:
        return HistoryError(f"{path} is not an mtlschat history file (not an SQLite database)")
    if _is_corrupt(exc):
        return HistoryError(f"history file {path} is damaged ({text}); {_RECOVER.format(path)}")
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return HistoryError(f"history file {path} is not writable ({text})")
    return HistoryError(f"cannot use history file {path}: {text}")
