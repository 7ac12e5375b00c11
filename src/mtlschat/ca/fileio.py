"""Atomic file writes: a reader never sees a half-written key, certificate or CRL, and a write
killed at any instant leaves no key-bearing temporary behind for long.

The data goes to an unnamed file (Linux ``O_TMPFILE``) in the target's directory, created with
its final mode, fsynced, then linked into place: killed before the link, the kernel frees it.
Replacing an existing file needs a name to rename from, so the file is linked to
``.NAME.XXXXXXXX.tmp`` for the instant between the link and the rename (and where ``O_TMPFILE`` is
not supported, for the whole write). Every writer holds an ``flock`` on its file from before it
has a name, so a temporary whose lock can be taken was left by a dead writer: the next write to
the same target, and opening the CA for its own directory, remove those.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path

from mtlschat.ca.errors import BadFile, OutputExists
from mtlschat.ca.testpoint import pause_point

PRIVATE = 0o600  # anything holding a private key
PUBLIC = 0o644  # certificates and CRLs


def _temp_name(directory: Path, target: str) -> Path:
    return directory / f".{target}.{secrets.token_hex(4)}.tmp"


def remove_stale_temporaries(directory: Path, target: str = "*") -> list[Path]:
    """Delete ``.TARGET.*.tmp`` files in ``directory`` whose writer is gone; return them."""
    removed = []
    for tmp in Path(directory).glob(f".{target}.*.tmp"):
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live writer holds it
        finally:
            os.close(fd)  # (releases the lock we may have taken)
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _open_unnamed(directory: Path, mode: int) -> tuple[int, Path | None]:
    """An fd for a new file in ``directory``: unnamed if the filesystem can, else a temp name."""
    with contextlib.suppress(OSError, AttributeError):
        return os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, mode), None
    # (O_TMPFILE fails with EISDIR/EOPNOTSUPP where unsupported: fall back to a named file.)
    for _ in range(100):
        # Not yet in the clean-up's pattern: it gets that name once its lock is held.
        tmp = directory / f".new-{secrets.token_hex(4)}"
        try:
            return os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


def atomic_write(path: Path, data: bytes, *, mode: int = PRIVATE, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` so that it appears whole or not at all, with ``mode`` from the
    start (never briefly world-readable).

    With ``overwrite=False`` the final step is a link, which fails if ``path`` exists, so two
    writers racing for the same name cannot clobber each other.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise BadFile(f"cannot write {path}: directory {directory} does not exist") from None
    except OSError as e:
        raise BadFile(f"cannot write {path}: {e.strerror}") from None
    tmp: Path | None = None
    fd = -1
    try:
        remove_stale_temporaries(directory, path.name)
        fd, tmp = _open_unnamed(directory, mode)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until closed: marks the temporary as live
        if tmp is not None:
            named = _temp_name(directory, path.name)  # the pattern the clean-up looks for
            os.rename(tmp, named)
            tmp = named
        os.fchmod(fd, mode)  # mode regardless of the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        pause_point(f"write:{path.name}")
        if tmp is None:
            # Name the unnamed file: linkat(AT_SYMLINK_FOLLOW) on its /proc link (a dir fd makes
            # Python call linkat rather than link, which would not follow it).
            name = _temp_name(directory, path.name) if overwrite else path
            _link(f"/proc/self/fd/{fd}", name, dir_fd, path)
            if overwrite:
                tmp = name
        elif not overwrite:
            _link(str(tmp), path, dir_fd, path)
        if overwrite:
            assert tmp is not None
            os.replace(tmp, path)
            tmp = None
        os.fsync(dir_fd)  # the new name survives a power cut too
    except OSError as e:
        raise BadFile(f"cannot write {path}: {e.strerror}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if fd >= 0:
            os.close(fd)
        os.close(dir_fd)


def _link(source: str, dest: Path, dir_fd: int, path: Path) -> None:
    """Hard-link ``source`` as ``dest.name`` in the directory ``dir_fd``, following a /proc link."""
    try:
        os.link(source, dest.name, dst_dir_fd=dir_fd, follow_symlinks=True)
    except FileExistsError:
        raise OutputExists(f"{path} already exists (use --force to overwrite)") from None


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
