"""Pipe mode: stdin lines go to the room, each received message is one plain line on stdout.

Used when stdin is not a terminal (scripts, tests). Connection notices go to stderr so stdout
holds only what the room said. Lines are paced to the room's rate (see :mod:`.outgoing`), so a
long file arrives whole. When stdin ends, queued lines are delivered (reconnecting if needed),
then ``/quit`` is sent and the client waits for the server's goodbye. If the server refused any
line, the exit is :attr:`~.errors.ExitCode.NOT_DELIVERED`, saying how many.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import TextIO

from mtlschat.address import Address
from mtlschat.client.connection import Link
from mtlschat.client.errors import ClientError, ExitCode
from mtlschat.client.outgoing import RATE_LIMITED
from mtlschat.client.protocol import Event
from mtlschat.client.render import render_plain


async def run_pipe(
    servers: Sequence[Address],
    context: ssl.SSLContext,
    stdin_fd: int,
    stdout: TextIO,
    stderr: TextIO,
    *,
    timestamps: bool = False,
) -> None:
    """Run the pipe front end until stdin ends (raise ClientError on a fatal failure);
    ``servers``: the nodes of the room (see :class:`~.connection.Link`)."""
    loop = asyncio.get_running_loop()
    refused: dict[str, int] = {}  # error code -> lines the server refused with it
    sent = 0

    def on_event(event: Event) -> None:
        if event.type == "error" and not event.local:  # after the welcome: one line of ours
            code = event.text("code") or "error"
            refused[code] = refused.get(code, 0) + 1
        for line in render_plain(event, timestamps=timestamps):
            stdout.write(line + "\n")
        stdout.flush()

    def on_status(text: str, error: bool) -> None:
        stderr.write(f"mtlschat: {text}\n")
        stderr.flush()

    def on_sent(line: str) -> None:
        nonlocal sent
        sent += 1

    link = Link(servers, context, on_event, on_status, on_sent=on_sent)

    def call(fn: Callable[[], None]) -> bool:
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is gone: the client is exiting
            return False
        return True

    def read_stdin() -> None:
        # A thread, because a regular file (`< lines.txt`) cannot be watched by the event loop.
        # It reads the raw fd: a daemon thread blocked inside a buffered reader's lock would
        # abort the interpreter at exit.
        pending = b""
        while True:
            try:
                chunk = os.read(stdin_fd, 65536)
            except OSError:
                chunk = b""
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop() if chunk else b""
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip("\r")
                if line.strip() and not call(functools.partial(link.send, line)):
                    return
            if not chunk:
                call(lambda: link.quit(deliver=True))
                return

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    await link.run()
    if refused:
        raise ClientError(ExitCode.NOT_DELIVERED, not_delivered(refused, sent))


def not_delivered(refused: dict[str, int], sent: int) -> str:
    """The exit message when the server refused lines (``refused``: error code -> count)."""
    count = sum(refused.values())
    why = ", ".join(f"{n} {code.replace('_', ' ')}" for code, n in sorted(refused.items()))
    if RATE_LIMITED in refused:
        # After a rate-limit notice the server drops lines silently for a second.
        return (
            f"at least {count} of {sent} lines were not delivered ({why}; the server drops "
            "lines over its rate without saying each one: another session with your name "
            "may be sending too)"
        )
    return f"{count} of {sent} lines were not delivered ({why})"
