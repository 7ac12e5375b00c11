"""The server's side of a room on Redis (``--redis``): the settings turned into a node engine,
its history mirror, and a CRL published by another node checked and installed here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509

from mtlschat.ca.errors import CAError
from mtlschat.ca.trust import CRLState, check_crl
from mtlschat.chat.room import Room
from mtlschat.cluster.engine import CrlHandler, Engine
from mtlschat.cluster.url import RedisURL, RedisURLError, load_password, tls_context
from mtlschat.history.journal import Journal
from mtlschat.history.memory import MemoryStore
from mtlschat.net.config import ConfigError, ServerConfig

log = logging.getLogger("mtlschat.server")

MIRROR_LINES = 100_000  # chat lines a node keeps in memory for replay, /history and /search


def redis_url(config: ServerConfig) -> RedisURL:
    """The ``--redis`` URL, parsed (raise :class:`ConfigError` with a one-line reason)."""
    assert config.redis is not None
    try:
        return RedisURL.parse(config.redis)
    except RedisURLError as exc:
        raise ConfigError(str(exc)) from None


def mirror_history(config: ServerConfig) -> Journal:
    """The history of a node: a mirror in memory of the log in Redis (filled at connect)."""
    lines = min(config.history_lines or MIRROR_LINES, MIRROR_LINES)
    store = MemoryStore(
        "", max_lines=lines, max_age=config.history_days * 86400.0, location=str(redis_url(config))
    )
    return Journal(store, keep_dms=config.history_dms)


def open_engine(
    config: ServerConfig, room: Room, on_crl: CrlHandler, lagging: Callable[[], bool] | None = None
) -> Engine:
    """The engine for ``room`` (relayed, its node set) per ``--redis``, ``--redis-ca`` and the
    password (raise :class:`ConfigError` for a bad URL, password file or CA); ``lagging``: see
    :class:`Engine`."""
    url = redis_url(config)
    try:
        password = load_password(config.redis_password_file)
        tls = tls_context(config.redis_ca) if url.tls else None
    except RedisURLError as exc:
        raise ConfigError(str(exc)) from None
    history = room.history
    mirror = history.store.max_lines if history and isinstance(history.store, MemoryStore) else 0
    return Engine(
        room,
        url,
        password=password,
        tls=tls,
        maxlen=config.history_lines,
        max_age=config.history_days * 86400.0,
        mirror_lines=mirror,
        on_crl=on_crl,
        lagging=lagging,
    )


def install_crl(
    pem: bytes, target: Path, cas: Sequence[x509.Certificate], current: CRLState | None
) -> bool:
    """Check a CRL another node published against our CA (signed by it, not older than
    ``current``) and, if it passes, write it over ``target`` atomically. True if installed."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.redis.tmp")
    try:
        tmp.write_bytes(pem)
        check_crl(tmp, cas, current)
        os.replace(tmp, target)
    except (CAError, OSError) as exc:
        log.error("redis: the CRL another node published is not installed: %s", exc)
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return True


__all__ = ["install_crl", "mirror_history", "open_engine", "redis_url"]
