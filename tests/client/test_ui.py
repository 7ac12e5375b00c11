"""The prompt_toolkit UI, driven through a pipe input and a recording DummyOutput."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from mtlschat.address import parse_address
from mtlschat.client.connection import Link
from mtlschat.client.protocol import ChatState, Event
from mtlschat.client.tls import client_context
from mtlschat.client.ui import ChatCompleter, ChatUI, run_ui

if TYPE_CHECKING:
    from conftest import TestPKI

DEADLINE = 20.0


class RecordingOutput(DummyOutput):
    """A DummyOutput that keeps the text written to it."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, data: str) -> None:
        self.written.append(data)

    def write_raw(self, data: str) -> None:
        self.written.append(data)

    def text(self) -> str:
        return "".join(self.written)


async def until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` (letting the event loop run) until it holds, with a deadline."""
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


def welcomed(name: str, *online: str) -> ChatState:
    state = ChatState()
    state.apply(Event("welcome", {"name": name, "online": [name, *online]}))
    return state


def test_message_arriving_mid_line_leaves_the_half_line_intact() -> None:
    async def scenario() -> None:
        out = RecordingOutput()
        sent: list[str] = []
        quits: list[str] = []
        with create_pipe_input() as keys:
            ui = ChatUI(welcomed("alice", "bob"), input=keys, output=out)
            ui.send, ui.quit = sent.append, quits.append
            typing = asyncio.create_task(ui.input_loop())
            buffer = ui.session.default_buffer
            keys.send_text("hel")
            await until(lambda: buffer.text == "hel", "typed text in the buffer")

            ui.show_event(Event("msg", {"from": "bob", "text": "hi from bob", "ts": 0.0}))
            await until(lambda: "hi from bob" in out.text(), "the message printed")
            assert buffer.text == "hel"
            assert buffer.cursor_position == 3

            keys.send_text("lo\r")
            await until(lambda: sent == ["hello"], "the finished line sent")
            assert "hello" in out.text()  # shown locally: the server does not echo it

            keys.send_text("\x1b[A")  # Up: the line typed before comes back
            await until(lambda: buffer.text == "hello", "history")
            keys.send_text("\x15")  # Ctrl-U clears it again
            await until(lambda: buffer.text == "", "cleared line")

            keys.send_text("/quit see you\r")
            await asyncio.wait_for(typing, DEADLINE)
            assert quits == ["/quit see you"]

    asyncio.run(scenario())


def test_a_pasted_block_is_sent_line_by_line() -> None:
    sent: list[str] = []
    quits: list[str] = []
    with create_pipe_input() as keys:
        ui = ChatUI(welcomed("alice"), input=keys, output=DummyOutput())
        ui.send, ui.quit = sent.append, quits.append
        assert ui.submit("one\n\ntwo\r\n/me three")
        assert sent == ["one", "two", "/me three"]
        assert not ui.submit("four\n/quit done\nnever")
        assert sent[-1] == "four" and quits == ["/quit done"]


def test_ctrl_d_leaves() -> None:
    async def scenario() -> None:
        quits: list[str] = []
        with create_pipe_input() as keys:
            ui = ChatUI(welcomed("alice"), input=keys, output=DummyOutput())
            ui.quit = quits.append
            typing = asyncio.create_task(ui.input_loop())
            keys.send_text("\x04")
            await asyncio.wait_for(typing, DEADLINE)
        assert quits == ["/quit"]

    asyncio.run(scenario())


def test_completion_of_commands_and_names() -> None:
    completer = ChatCompleter(welcomed("alice", "bob", "Bernard", "carol"))

    def complete(text: str) -> list[str]:
        doc = Document(text, len(text))
        return [c.text for c in completer.get_completions(doc, CompleteEvent())]

    assert complete("/m") == ["/me", "/msg"]  # not /mode: protocol plumbing
    assert complete("/msg b") == ["Bernard", "bob"]
    assert complete("hi CA") == ["carol"]
    assert complete("x /w") == []  # a command only at the start of the line


def test_ui_against_a_real_server(pki: TestPKI, spawn_server: Any, spawn_client: Any) -> None:
    """The whole UI wired to a real connection: a line from bob lands mid-typing."""
    server = spawn_server(pki.dir)
    addr = f"localhost:{server.port}"
    bob = spawn_client("--cert", pki.user("bob"), addr)
    bob.wait_out("* welcome bob")

    async def scenario() -> None:
        out = RecordingOutput()
        with create_pipe_input() as keys:
            state = ChatState()
            ui = ChatUI(state, input=keys, output=out)
            context = client_context(pki.user("alice"), None)
            link = Link(parse_address(addr), context, ui.show_event, ui.show_status, state=state)
            session = asyncio.create_task(run_ui(ui, link))
            await until(lambda: "welcome alice" in out.text(), "the welcome")
            keys.send_text("half a li")
            await until(lambda: ui.session.default_buffer.text == "half a li", "typing")
            bob.send("interrupting you")
            await until(lambda: "interrupting you" in out.text(), "bob's line")
            assert ui.session.default_buffer.text == "half a li"
            keys.send_text("ne\r")
            line = await asyncio.to_thread(bob.wait_out, "half a line")
            assert line == "<alice> half a line"
            keys.send_text("\x04")
            await asyncio.wait_for(session, DEADLINE)
            assert "bye: quit" in out.text()

    asyncio.run(scenario())
    bob.wait_out("* alice left")
    bob.close_stdin()
    assert bob.wait_exit() == 0


class Terminal:
    """``mtlschat client`` on a real pseudo-terminal, its screen drained by a thread."""

    def __init__(self, *args: str | os.PathLike[str], env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "mtlschat", "client", *map(str, args)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSCHAT_")}
        full_env.update(TERM="xterm", COLUMNS="100", LINES="30", **(env or {}))
        self.fd, secondary = pty.openpty()
        self.proc = subprocess.Popen(
            cmd, stdin=secondary, stdout=secondary, stderr=secondary, env=full_env
        )
        os.close(secondary)
        self.screen = bytearray()
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:  # always drain the terminal, so the client never blocks on it
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # the client exited and the terminal closed
                data = b""
            if b"\x1b[6n" in data:  # answer cursor position requests like a real terminal
                os.write(self.fd, b"\x1b[1;1R")
            with self.changed:
                self.screen.extend(data)
                self.changed.notify_all()
            if not data:
                return

    def expect(self, text: bytes, then: bytes = b"") -> None:
        """Wait for ``text``, then for ``then`` after it (e.g. the prompt redrawn: typing
        before that races the terminal's switch back to raw mode; no person is that fast)."""

        def seen() -> bool:
            at = self.screen.find(text)
            return at >= 0 and self.screen.find(then, at) >= 0

        with self.changed:
            ok = self.changed.wait_for(seen, DEADLINE)
            assert ok, f"{text!r} never appeared in {bytes(self.screen)[-2000:]!r}"

    def type(self, keys: bytes) -> None:
        """Type ``keys``."""
        os.write(self.fd, keys)

    def exit_code(self) -> int | None:
        """Wait for the client to exit (None if it does not)."""
        try:
            return self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """Teardown."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(DEADLINE)
        os.close(self.fd)


def test_terminal_ui_in_a_real_pty(pki: TestPKI, spawn_server: Any, spawn_client: Any) -> None:
    """``mtlschat client`` on a real terminal: type, receive, Ctrl-D, exit 0."""
    server = spawn_server(pki.dir)
    addr = f"localhost:{server.port}"
    bob = spawn_client("--cert", pki.user("bob"), addr)
    bob.wait_out("* welcome bob")
    term = Terminal("--cert", pki.user("alice"), addr)
    try:
        term.expect(b"welcome alice", then=b"alice>")
        bob.wait_out("* alice joined")
        term.type(b"hi from a terminal\r")
        assert bob.wait_out("hi from a terminal") == "<alice> hi from a terminal"
        bob.send("welcome, terminal")
        term.expect(b"welcome, terminal", then=b"alice>")
        term.type(b"\x04")  # Ctrl-D
        assert term.exit_code() == 0, bytes(term.screen)[-2000:]
    finally:
        term.close()
    bob.close_stdin()
    assert bob.wait_exit() == 0


def test_passphrase_prompt_on_a_terminal(pki: TestPKI, spawn_server: Any) -> None:
    """An encrypted bundle and no MTLSCHAT_BUNDLE_PASSPHRASE: the client asks, hidden."""
    server = spawn_server(pki.dir)
    locked = pki.dir.parent / "tty-locked.pem"
    if not locked.exists():
        pki.ca.issue_user("ttylocked", out=locked, passphrase=b"open sesame")
    term = Terminal("--cert", locked, f"localhost:{server.port}")
    try:
        prompt = f"passphrase for {locked}: ".encode()
        for attempt in range(1, 4):  # three tries: two wrong ones are forgiven
            with term.changed:
                asked = term.changed.wait_for(
                    lambda n=attempt: term.screen.count(prompt) >= n, DEADLINE
                )
            assert asked, bytes(term.screen)
            term.type(b"open sesame\r" if attempt == 3 else b"wrong guess\r")
        assert term.screen.count(b"try again") == 2
        term.expect(b"welcome ttylocked", then=b"ttylocked>")
        assert b"open sesame" not in term.screen  # not echoed
        term.type(b"/quit\r")
        assert term.exit_code() == 0, bytes(term.screen)[-2000:]
    finally:
        term.close()
