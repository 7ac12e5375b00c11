"""Putting a new CA in place as a whole: ``ca init`` killed at any instant leaves either the old
state or the new CA, never a key without its certificate.

The new CA's four files are built in a staging directory ``PKI/.init-XXXX/``. Writing the marker
``PKI/.init-pending`` (naming the staging and backup directories) is the commit point: before
it, the PKI directory is untouched and the staging directory is removed by the next ``init``;
after it, whoever opens the PKI next (any ``mtlschat ca`` command) finishes the move. The move
is idempotent, file by file, ``ca.crt`` last: a file still in staging has not been moved, so
what has its name in the PKI directory is the old one, which goes to the backup directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from mtlschat.ca.errors import BadFile
from mtlschat.ca.fileio import PRIVATE, atomic_write
from mtlschat.ca.paths import PKIPaths
from mtlschat.ca.testpoint import pause_point

# In the order they are moved into place: ca.crt last, since its presence is what "a CA is
# here" means to `open`. Each name carries the SQLite side files of the same stem with it.
CA_FILES = ("crl.pem", "ca.db", "ca.key", "ca.crt")
_DB_SIDE_FILES = ("-wal", "-shm", "-journal")
_STAGING_PREFIX = ".init-"


def _group(directory: Path, name: str) -> list[Path]:
    """``name`` and, for the database, its side files (the journal must move with it)."""
    paths = [directory / name]
    if name == "ca.db":
        paths += [directory / f"{name}{suffix}" for suffix in _DB_SIDE_FILES]
    return paths


def existing_ca_files(paths: PKIPaths) -> list[Path]:
    """The CA files (and database side files) present in the PKI directory."""
    return [p for name in CA_FILES for p in _group(paths.dir, name) if p.exists()]


@contextlib.contextmanager
def install_lock(paths: PKIPaths) -> Iterator[None]:
    """Exclusive: one ``init`` (or finisher of an interrupted one) at a time per PKI directory."""
    try:
        fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE)
    except OSError as e:
        raise BadFile(f"cannot lock {paths.dir}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def new_staging(paths: PKIPaths) -> Path:
    """A fresh staging directory (0700) inside the PKI directory (same filesystem: rename)."""
    try:
        return Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=paths.dir))
    except OSError as e:
        raise BadFile(f"cannot create a directory in {paths.dir}: {e.strerror}") from None


def backup_dir(paths: PKIPaths, now: datetime | None = None) -> Path:
    """A dated, unused directory name for the CA being replaced: ``PKI/backup-YYYYmmddTHHMMSSZ``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    candidate = paths.dir / f"backup-{stamp}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = paths.dir / f"backup-{stamp}-{n}"
    return candidate


def commit(paths: PKIPaths, staging: Path, backup: Path | None) -> None:
    """Write the marker (the commit point), then move the staged CA into place."""
    marker = {"staging": staging.name, "backup": backup.name if backup else None}
    atomic_write(paths.init_marker, json.dumps(marker).encode(), mode=PRIVATE)
    pause_point("init:committed")
    _roll_forward(paths, staging, backup)


def finish_interrupted(paths: PKIPaths) -> None:
    """Complete an init that was killed after its commit point; drop uncommitted staging.

    Call with :func:`install_lock` held.
    """
    if paths.init_marker.exists():
        try:
            marker = json.loads(paths.init_marker.read_text())
            staging = paths.dir / str(marker["staging"])
            backup = paths.dir / str(marker["backup"]) if marker.get("backup") else None
        except (OSError, ValueError, KeyError, TypeError):
            raise BadFile(
                f"{paths.init_marker} is unreadable: remove it and check {paths.dir}"
            ) from None
        _roll_forward(paths, staging, backup)
    for stray in paths.dir.glob(f"{_STAGING_PREFIX}*"):
        if stray.is_dir():  # never committed: the new CA it holds was never used
            shutil.rmtree(stray, ignore_errors=True)


def _roll_forward(paths: PKIPaths, staging: Path, backup: Path | None) -> None:
    try:
        if backup is not None:
            backup.mkdir(mode=0o700, exist_ok=True)
        for name in CA_FILES:
            if not (staging / name).exists():
                continue  # moved already (by the run that was interrupted)
            for old in _group(paths.dir, name):
                if not old.exists():
                    continue
                if backup is None:
                    old.unlink()
                else:
                    os.rename(old, _free_name(backup / old.name))
            for new in _group(staging, name):
                if new.exists():
                    os.rename(new, paths.dir / new.name)
            pause_point(f"init:moved:{name}")
        _fsync(paths.dir)
        paths.init_marker.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    except OSError as e:
        raise BadFile(f"cannot move the new CA into {paths.dir}: {e.strerror}") from None


def _free_name(path: Path) -> Path:
    n = 1
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
