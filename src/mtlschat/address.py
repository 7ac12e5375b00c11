"""Where a server is: the default port and the one ``HOST[:PORT]`` parser (client and bench),
alone or several (a client given the nodes of one room)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

DEFAULT_PORT = 7443


class Address(NamedTuple):
    """Where the server is; ``host`` is also the name its certificate must carry."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str | None) -> Address:
    """``HOST``, ``HOST:PORT``, ``[V6]:PORT``, ``V6`` or ``:PORT`` (default localhost:7443).

    Raises :class:`ValueError` with a one-line message for a malformed address or port.
    """
    if not text:
        return Address("localhost", DEFAULT_PORT)
    host, port = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}: use [IPV6]:PORT")
        port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in {text!r}: use a number from 1 to 65535")
    return Address(host or "localhost", int(port) if port else DEFAULT_PORT)


def parse_addresses(texts: Iterable[str]) -> list[Address]:
    """Several servers: each of ``texts`` is one or more ``HOST[:PORT]`` separated by commas or
    spaces (``a:7443 b:7443``, ``a:7443,b:7443``); none at all is ``[localhost:7443]``.

    Raises :class:`ValueError` (one line) for a malformed one.
    """
    words = [word for text in texts for word in text.replace(",", " ").split()]
    return [parse_address(word) for word in words] or [parse_address(None)]
