"""Pipe mode: stdin lines go to the room, each received message is one plain line on stdout.

Used when stdin is not a terminal (scripts, tests). Connection notices go to stderr so stdout
holds only what the room said. When stdin ends, queued lines are delivered (reconnecting if
needed), then ``/quit`` is sent and the client waits for the server's goodbye.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import threading
from collections.abc import Callable
from typing import TextIO

from mtlschat.address import Address
from mtlschat.client.connection import Link
from mtlschat.client.protocol import Event
from mtlschat.client.render import render_plain


async def run_pipe(
    address: Address,
    context: ssl.SSLContext,
    stdin_fd: int,
    stdout: TextIO,
    stderr: TextIO,
    *,
    timestamps: bool = False,
) -> None:
    """Run the pipe front end until stdin ends (raise ClientError on a fatal failure)."""
    loop = asyncio.get_running_loop()

    def on_event(event: Event) -> None:
        for line in render_plain(event, timestamps=timestamps):
            stdout.write(line + "\n")
        stdout.flush()

    def on_status(text: str, error: bool) -> None:
        stderr.write(f"mtlschat: {text}\n")
        stderr.flush()

    link = Link(address, context, on_event, on_status)

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
