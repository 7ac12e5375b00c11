"""RESP, sans-I/O: commands to bytes (``hiredis.pack_command``) and bytes to replies
(``hiredis.Reader``). No sockets here: :mod:`mtlschat.cluster.link` moves the bytes.

Replies are what hiredis gives: ``bytes`` (bulk and simple strings, undecoded), ``int``,
``list`` (nested replies), ``None`` (nil), or a :class:`ReplyError` instance for an error reply
(returned as a value, never raised: one command failing says nothing about the next). On a RESP3
connection (``HELLO 3``) maps are ``dict`` and what Redis pushes unasked (a Pub/Sub message, a
subscribe confirmation) is a :data:`Push`, a list, never the reply to a command.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import hiredis

Arg = bytes | str | int | float
Reply = object  # bytes | int | list[Reply] | None | ReplyError
ReplyError = hiredis.ReplyError
Push = hiredis.PushNotification  # (a list subclass: test for it before any list)


class ProtocolError(Exception):
    """The peer sent bytes that are not RESP: the connection cannot be trusted any more."""


def encode(args: Sequence[Arg]) -> bytes:
    """One command as RESP bytes: ``encode(["SET", "k", 1])``."""
    if not args:
        raise ValueError("a Redis command needs at least its name")
    # (hiredis's stub types the tuple as one element long: the Any keeps mypy out of it)
    command: Any = tuple(args)
    packed: bytes = hiredis.pack_command(command)
    return packed


class ReplyParser:
    """Feed it bytes as they arrive; iterate the complete replies in order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()

    def feed(self, data: bytes) -> None:
        """Add bytes received from the server."""
        self._reader.feed(data)

    def replies(self) -> Iterator[Reply]:
        """Every reply that is complete so far (raises :class:`ProtocolError` on garbage)."""
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                raise ProtocolError(str(exc)) from None
            if reply is False:  # hiredis: not enough data yet (RESP2 has no booleans)
                return
            yield reply
