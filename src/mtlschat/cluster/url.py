"""Where the Redis is and how to reach it: ``redis://HOST:PORT/DB`` (or ``rediss://`` for TLS),
the password (from a file or the environment, never from the URL or argv) and the TLS context.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 6379
PASSWORD_ENV = "MTLSCHAT_REDIS_PASSWORD"
_NO_PASSWORD_IN_URL = (
    "put the password in --redis-password-file or MTLSCHAT_REDIS_PASSWORD, never in the URL"
)


class RedisURLError(ValueError):
    """A Redis URL, password file or CA that cannot be used; the message is one line for a user."""


@dataclass(frozen=True)
class RedisURL:
    """A parsed ``redis://`` / ``rediss://`` URL (no password: see :func:`load_password`)."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    tls: bool = False
    username: str | None = None  # Redis 6 ACL user (not a secret); AUTH uses it with the password

    @classmethod
    def parse(cls, text: str) -> RedisURL:
        """Parse ``redis://[user@]HOST[:PORT][/DB]`` or ``rediss://...``.

        Raises :class:`RedisURLError` (a ValueError) with a one-line reason for anything else,
        including a URL that carries a password.
        """
        shown = text if "@" not in text else "the --redis URL"  # never echo a secret back
        try:
            parts = urlsplit(text.strip())
            port = parts.port
        except ValueError as exc:
            raise RedisURLError(f"bad Redis URL {shown!r}: {exc}") from None
        if parts.scheme not in ("redis", "rediss"):
            raise RedisURLError(
                f"bad Redis URL {shown!r}: it must start with redis:// or rediss:// (TLS)"
            )
        if parts.password is not None:
            raise RedisURLError(f"bad Redis URL: {_NO_PASSWORD_IN_URL}")
        if not parts.hostname:
            raise RedisURLError(f"bad Redis URL {shown!r}: no host (redis://HOST:PORT/DB)")
        if parts.query or parts.fragment:
            raise RedisURLError(f"bad Redis URL {shown!r}: no ?query or #fragment is understood")
        path = parts.path.strip("/")
        if path and not (path.isascii() and path.isdigit()):
            raise RedisURLError(f"bad Redis URL {shown!r}: the database {path!r} is not a number")
        return cls(
            host=parts.hostname,
            port=DEFAULT_PORT if port is None else port,
            db=int(path) if path else 0,
            tls=parts.scheme == "rediss",
            username=unquote(parts.username) if parts.username else None,
        )

    @property
    def is_ip(self) -> bool:
        """True if ``host`` is an IP address (nothing to resolve, no DNS lookup)."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{user}{host}:{self.port}/{self.db}"


def load_password(file: Path | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The Redis password: the first line of ``file`` if given, else ``MTLSCHAT_REDIS_PASSWORD``,
    else None (no AUTH). Raises :class:`RedisURLError` for a file that cannot be read or is empty.
    """
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise RedisURLError(f"cannot read the Redis password file {file}: {reason}") from None
        password = text.splitlines()[0] if text.strip() else ""
        if not password:
            raise RedisURLError(f"the Redis password file {file} is empty")
        return password
    value = (os.environ if environ is None else environ).get(PASSWORD_ENV, "")
    return value or None


def tls_context(ca: Path | None, cert: Path | None = None) -> ssl.SSLContext:
    """A client context for ``rediss://``: TLS >= 1.2, the server's certificate checked against
    ``ca`` (the system's CAs if None) and its name; ``cert`` is an optional client bundle (key and
    certificate in one PEM) for a Redis that requires client certificates.
    """
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
        if cert is not None:
            ctx.load_cert_chain(cert)
    except (OSError, ssl.SSLError) as exc:
        what = f"the Redis CA {ca}" if cert is None else f"the Redis CA {ca} or bundle {cert}"
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise RedisURLError(f"cannot load {what}: {reason}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
