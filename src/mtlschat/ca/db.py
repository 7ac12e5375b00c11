"""The CA's record of issued certificates, in SQLite.

Writers take ``BEGIN IMMEDIATE`` (the database write lock) for the whole check-then-insert, and
every connection waits up to :data:`BUSY_TIMEOUT` seconds for that lock, so two ``ca issue``
processes started at once serialise instead of failing or both taking the same name.
Serials are stored as hex text: they are up to 159 bits, wider than SQLite's INTEGER.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mtlschat.ca.errors import BadFile

BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certs (
    serial      TEXT PRIMARY KEY,          -- lowercase hex, no 0x
    name        TEXT NOT NULL,             -- CN as issued
    name_key    TEXT NOT NULL,             -- casefolded CN, for uniqueness
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'server')),
    not_before  INTEGER NOT NULL,          -- Unix seconds
    not_after   INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,             -- SHA-256 of the DER certificate, hex
    revoked_at  INTEGER,                   -- NULL while not revoked
    reason      TEXT,
    cert_pem    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certs_name_key ON certs (name_key);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Every CRL signed, recorded (in the transaction that made it) before crl.pem is replaced, so
-- a crash cannot undo an announced revocation nor reuse a CRL number.
CREATE TABLE IF NOT EXISTS crls (
    number      INTEGER PRIMARY KEY,
    issued_at   INTEGER NOT NULL,
    pem         TEXT NOT NULL
);
-- Certificates `mtlschat bench` issued into a PKI it did not create (a live room): recorded in
-- the transaction that records the certificate, revoked and their bundle deleted when the run
-- ends (or, for a run that was killed, by the next `ca` command or bench: see ca/benchrun.py).
CREATE TABLE IF NOT EXISTS bench_certs (
    serial      TEXT PRIMARY KEY,          -- certs.serial
    run         TEXT NOT NULL,             -- the run's id (it holds PKI/bench/.run-ID.lock)
    path        TEXT NOT NULL,             -- the bundle (key) file to delete
    done        INTEGER NOT NULL DEFAULT 0 -- 1 once revoked and the bundle deleted
);
-- Serials revoked by number that the record does not hold (e.g. issued before a lost ca.db).
CREATE TABLE IF NOT EXISTS unknown_revocations (
    serial      TEXT PRIMARY KEY,
    revoked_at  INTEGER NOT NULL,
    reason      TEXT NOT NULL
);
"""


def _ts(value: datetime) -> int:
    return int(value.timestamp())


def _dt(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True)
class CertRecord:
    """One row of the record: a certificate the CA issued."""

    serial: int
    name: str
    kind: str
    not_before: datetime
    not_after: datetime
    fingerprint: str
    revoked_at: datetime | None
    reason: str | None
    cert_pem: str
    bench: bool = False  # issued by `mtlschat bench` into this PKI (hidden by `ca list`)

    def status(self, now: datetime | None = None) -> str:
        """``revoked``, ``expired`` or ``valid``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.not_after <= (now or datetime.now(UTC)):
            return "expired"
        return "valid"


@dataclass(frozen=True)
class Revocation:
    """One entry of the CRL."""

    serial: int
    revoked_at: datetime
    reason: str


def _record(row: sqlite3.Row) -> CertRecord:
    return CertRecord(
        serial=int(row["serial"], 16),
        name=row["name"],
        kind=row["kind"],
        not_before=_dt(row["not_before"]),
        not_after=_dt(row["not_after"]),
        fingerprint=row["fingerprint"],
        revoked_at=None if row["revoked_at"] is None else _dt(row["revoked_at"]),
        reason=row["reason"],
        cert_pem=row["cert_pem"],
        bench=bool(row["bench"]),
    )


_WITH_BENCH = (
    "SELECT certs.*, bench_certs.serial IS NOT NULL AS bench FROM certs"
    " LEFT JOIN bench_certs ON bench_certs.serial = certs.serial"
)


class CertDB:
    """Thin typed access to ``ca.db`` over one connection, opened on first use.

    The database is in WAL mode: a commit costs one fsync, and keeping the connection open
    avoids a checkpoint each time (which matters when a benchmark issues thousands of certs).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self._conn is None:
            try:
                # isolation_level=None: we issue BEGIN ourselves, so the lock taken is explicit.
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
                conn.row_factory = sqlite3.Row
                # FULL: every commit is durable (an issued certificate is never unrecorded).
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as e:
                raise BadFile(f"cannot open CA database {self.path}: {e}") from None
            self._conn = conn
        try:
            yield self._conn
        except sqlite3.DatabaseError as e:
            raise BadFile(f"CA database {self.path}: {e}") from None

    def close(self) -> None:
        """Close the connection (it is reopened if used again)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database lock from the start (BEGIN IMMEDIATE)."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite may already have rolled back (e.g. I/O error)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def create(self) -> None:
        """Create the tables (idempotent)."""
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
            conn.executescript(_SCHEMA)

    @staticmethod
    def active_names(conn: sqlite3.Connection, name: str, kind: str, now: datetime) -> list[int]:
        """Serials of unrevoked, unexpired certificates of ``kind`` whose name matches."""
        rows = conn.execute(
            "SELECT serial FROM certs WHERE name_key = ? AND kind = ? AND revoked_at IS NULL"
            " AND not_after > ?",
            (name.casefold(), kind, _ts(now)),
        ).fetchall()
        return [int(r["serial"], 16) for r in rows]

    @staticmethod
    def insert(conn: sqlite3.Connection, rec: CertRecord) -> None:
        """Add a certificate (inside a :meth:`transaction`)."""
        conn.execute(
            "INSERT INTO certs (serial, name, name_key, kind, not_before, not_after, fingerprint,"
            " cert_pem) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                f"{rec.serial:x}",
                rec.name,
                rec.name.casefold(),
                rec.kind,
                _ts(rec.not_before),
                _ts(rec.not_after),
                rec.fingerprint,
                rec.cert_pem,
            ),
        )

    @staticmethod
    def revoke(
        conn: sqlite3.Connection,
        name: str,
        kind: str | None,
        reason: str,
        now: datetime,
        keep: int | None = None,
    ) -> list[int]:
        """Mark every unrevoked certificate called ``name`` (but serial ``keep``) revoked; return
        their serials."""
        query = "SELECT serial FROM certs WHERE name_key = ? AND revoked_at IS NULL"
        args: tuple[str, ...] = (name.casefold(),)
        if kind is not None:
            query += " AND kind = ?"
            args += (kind,)
        if keep is not None:
            query += " AND serial != ?"
            args += (f"{keep:x}",)
        serials = [r["serial"] for r in conn.execute(query, args).fetchall()]
        conn.executemany(
            "UPDATE certs SET revoked_at = ?, reason = ? WHERE serial = ?",
            [(_ts(now), reason, s) for s in serials],
        )
        return [int(s, 16) for s in serials]

    @staticmethod
    def revoke_serial(conn: sqlite3.Connection, serial: int, reason: str, now: datetime) -> bool:
        """Revoke one recorded certificate by serial; False if unknown or already revoked."""
        cur = conn.execute(
            "UPDATE certs SET revoked_at = ?, reason = ? WHERE serial = ? AND revoked_at IS NULL",
            (_ts(now), reason, f"{serial:x}"),
        )
        return cur.rowcount == 1

    @staticmethod
    def revoke_unknown(conn: sqlite3.Connection, serial: int, reason: str, now: datetime) -> bool:
        """Revoke a serial the record does not hold; False if it is already revoked that way."""
        cur = conn.execute(
            "INSERT OR IGNORE INTO unknown_revocations (serial, revoked_at, reason)"
            " VALUES (?, ?, ?)",
            (f"{serial:x}", _ts(now), reason),
        )
        return cur.rowcount == 1

    @staticmethod
    def get(conn: sqlite3.Connection, serial: int) -> CertRecord | None:
        """The record of ``serial``, if the CA holds it."""
        row = conn.execute(_WITH_BENCH + " WHERE certs.serial = ?", (f"{serial:x}",)).fetchone()
        return None if row is None else _record(row)

    @staticmethod
    def delete(conn: sqlite3.Connection, serial: int) -> None:
        """Forget a certificate that was never handed out (its file could not be written)."""
        conn.execute("DELETE FROM certs WHERE serial = ?", (f"{serial:x}",))

    @staticmethod
    def next_crl_number(conn: sqlite3.Connection) -> int:
        """Increment and return the CRL number (inside a :meth:`transaction`)."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'crl_number'").fetchone()
        number = (int(row["value"]) if row else 0) + 1
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('crl_number', ?)", (str(number),)
        )
        return number

    @staticmethod
    def record_crl(conn: sqlite3.Connection, number: int, pem: bytes, now: datetime) -> None:
        """Keep a signed CRL (inside the :meth:`transaction` that took its number)."""
        conn.execute(
            "INSERT INTO crls (number, issued_at, pem) VALUES (?, ?, ?)",
            (number, _ts(now), pem.decode("ascii")),
        )

    @staticmethod
    def latest_crl(conn: sqlite3.Connection) -> bytes | None:
        """The PEM of the newest recorded CRL (None for a record older than this table)."""
        row = conn.execute("SELECT pem FROM crls ORDER BY number DESC LIMIT 1").fetchone()
        return None if row is None else str(row["pem"]).encode("ascii")

    @staticmethod
    def mark_bench(conn: sqlite3.Connection, serial: int, run: str, path: Path) -> None:
        """Record ``serial`` as a bench certificate of ``run`` (inside the issuing transaction)."""
        conn.execute(
            "INSERT INTO bench_certs (serial, run, path) VALUES (?, ?, ?)",
            (f"{serial:x}", run, str(path)),
        )

    @staticmethod
    def bench_pending(conn: sqlite3.Connection, run: str) -> list[tuple[int, Path]]:
        """``run``'s bench certificates not yet cleaned up: (serial, bundle path)."""
        rows = conn.execute(
            "SELECT serial, path FROM bench_certs WHERE run = ? AND done = 0", (run,)
        ).fetchall()
        return [(int(r["serial"], 16), Path(r["path"])) for r in rows]

    @staticmethod
    def bench_finished(conn: sqlite3.Connection, run: str) -> None:
        """``run`` is cleaned up: revoked, bundles deleted."""
        conn.execute("UPDATE bench_certs SET done = 1 WHERE run = ?", (run,))

    def bench_runs(self) -> list[str]:
        """The bench runs with certificates not yet cleaned up."""
        with self._connect() as conn:
            rows = conn.execute("SELECT DISTINCT run FROM bench_certs WHERE done = 0").fetchall()
        return [str(r["run"]) for r in rows]

    @staticmethod
    def revoked(conn: sqlite3.Connection, now: datetime) -> list[Revocation]:
        """Every revocation (for the CRL): recorded certificates, then serials given alone.

        Bench certificates leave the CRL once expired (RFC 5280 allows dropping an expired
        certificate's entry), so benchmarking a live room does not grow its CRL for good.
        """
        rows = conn.execute(
            "SELECT serial, revoked_at, reason FROM certs WHERE revoked_at IS NOT NULL"
            " AND NOT (not_after < ? AND serial IN (SELECT serial FROM bench_certs))"
            " UNION ALL SELECT serial, revoked_at, reason FROM unknown_revocations"
            " ORDER BY revoked_at",
            (_ts(now),),
        ).fetchall()
        return [
            Revocation(int(r["serial"], 16), _dt(r["revoked_at"]), r["reason"] or "unspecified")
            for r in rows
        ]

    def newest_crl(self) -> bytes | None:
        """:meth:`latest_crl` outside a transaction (a read)."""
        with self._connect() as conn:
            return self.latest_crl(conn)

    def all(self) -> list[CertRecord]:
        """Every certificate, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(_WITH_BENCH + " ORDER BY not_before, certs.rowid").fetchall()
        return [_record(r) for r in rows]

    def by_name(self, name: str) -> list[CertRecord]:
        """Every certificate whose name matches case-insensitively, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                _WITH_BENCH + " WHERE name_key = ? ORDER BY not_before, certs.rowid",
                (name.casefold(),),
            ).fetchall()
        return [_record(r) for r in rows]
