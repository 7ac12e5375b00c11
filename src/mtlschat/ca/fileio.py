"""Atomic file writes: a reader never sees a half-written key, certificate or CRL."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from mtlschat.ca.errors import BadFile, OutputExists

PRIVATE = 0o600  # anything holding a private key
PUBLIC = 0o644  # certificates and CRLs


def atomic_write(path: Path, data: bytes, *, mode: int = PRIVATE, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, then rename/link it.

    The temp file is created with ``mode`` from the start (never briefly world-readable). With
    ``overwrite=False`` the final step is ``os.link``, which fails if ``path`` exists, so two
    writers racing for the same name cannot clobber each other.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise BadFile(f"cannot write {path}: directory {directory} does not exist") from None
    except OSError as e:
        raise BadFile(f"cannot write {path}: {e.strerror}") from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExists(f"{path} already exists (use --force to overwrite)") from None
            tmp.unlink()
    except OSError as e:
        raise BadFile(f"cannot write {path}: {e.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read_file(path: Path, what: str = "file") -> bytes:
    """Read a whole file, turning OS errors into a one-line :class:`BadFile`."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise BadFile(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise BadFile(f"{what} {path} is a directory") from None
    except OSError as e:
        raise BadFile(f"cannot read {what} {path}: {e.strerror}") from None
