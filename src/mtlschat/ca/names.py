"""The username policy: one definition shared by the CA, the server and the client.

A person's name in the room *is* the CN of their certificate, so the CA refuses to issue a
certificate for a name the server would refuse, and the server re-checks every CN it sees.
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 32
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")

NAME_POLICY = (
    "a username is 1-32 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit; "
    "names are unique case-insensitively"
)


class InvalidName(ValueError):
    """Raised when a string is not an acceptable username."""


def validate_username(name: str) -> str:
    """Return ``name`` unchanged if it satisfies the policy, else raise :class:`InvalidName`."""
    if not _NAME_RE.fullmatch(name):
        raise InvalidName(f"invalid username {name!r}: {NAME_POLICY}")
    return name


def is_valid_username(name: str) -> bool:
    """True if ``name`` satisfies the username policy."""
    return _NAME_RE.fullmatch(name) is not None


def name_key(name: str) -> str:
    """The case-insensitive identity of a name (used for uniqueness and lookups)."""
    return name.casefold()
