"""The prompt_toolkit UI, driven through a pipe input and a recording DummyOutput."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import tempfile
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
            ui.quit = quits.append

            def send(line: str) -> None:  # what a Link does: hand it over, then it is shown
                sent.append(line)
                ui.show_sent(line)

            ui.send = send
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

    assert complete("/m") == ["/me ", "/msg ", "/mute "]  # not /mode: protocol plumbing
    assert complete("/msg b") == ["Bernard ", "bob "]
    assert complete("hi CA") == ["carol "]
    assert complete("ca") == ["carol: "]  # addressing someone at the start of the line
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
        full_env.update(TERM="xterm", COLUMNS="100", LINES="30")
        # Never the real ~/.config: the UI remembers its bundle and server there.
        full_env["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="mtlschat-config-")
        full_env.update(env or {})
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

    def expect_after(self, offset: int, text: bytes) -> None:
        """Wait for ``text`` to be drawn after ``offset`` in the screen's bytes."""
        with self.changed:
            ok = self.changed.wait_for(lambda: self.screen.find(text, offset) >= 0, DEADLINE)
            assert ok, f"{text!r} never appeared after {offset} in {bytes(self.screen)[-2000:]!r}"

    def type(self, keys: bytes) -> None:
        """Type ``keys``."""
        os.write(self.fd, keys)

    def exit_code(self, timeout: float = DEADLINE) -> int | None:
        """Wait for the client to exit (None if it does not within ``timeout`` s)."""
        try:
            return self.proc.wait(timeout)
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


def _lines_with(screen: bytearray, text: bytes) -> int:
    return bytes(screen).count(text)


def test_tab_ctrl_c_and_a_mention_in_a_real_pty(
    pki: TestPKI, spawn_server: Any, spawn_client: Any
) -> None:
    """Tab adds ': ' at the start of a line and ' ' elsewhere; Ctrl-C clears a half-typed line
    and quits on an empty one; a mention rings the bell and names the caller in the title."""
    server = spawn_server(pki.dir)
    addr = f"localhost:{server.port}"
    bob = spawn_client("--cert", pki.user("bob"), addr)
    bob.wait_out("* welcome bob")
    term = Terminal("--cert", pki.user("alice"), addr)
    try:
        term.expect(b"welcome alice", then=b"alice>")
        bob.wait_out("* alice joined")
        mark = len(term.screen)
        term.type(b"bo")
        term.expect_after(mark, b"o")  # drawn ('o' is in no escape sequence of the redraw)
        mark = len(term.screen)
        term.type(b"\t")  # completion runs in the background: a person waits for it too
        term.expect_after(mark, b"b:")  # the screen is redrawn by differences: "bo" + "b:"
        sent = len(term.screen)
        term.type(b"hello there\r")
        assert bob.wait_out("hello there") == "<alice> bob: hello there"
        term.expect_after(sent, b"<alice>")  # our echo, printed once the line was sent
        mark = len(term.screen)
        term.type(b"/msg bo")
        term.expect_after(mark, b"o")
        mark = len(term.screen)
        term.type(b"\t")
        term.expect_after(mark, b"b")
        term.type(b"psst\r")
        assert bob.wait_out("psst") == "[dm] <alice> -> bob: psst"

        bob.send("hey alice, look")
        term.expect(b"hey ", then=b"look")
        term.expect(b"\x07")  # the bell
        term.expect(b"\x1b]2;[1] mtlschat: alice (bob called you)\x07")

        term.type(b"/frobnicate now\r")  # refused: marked next to the line itself
        term.expect(b'not delivered: "/frobnicate now" (unknown command /frobnicate')
        term.type(b"never sent")
        term.expect(b"never sent")
        term.type(b"\x03")  # Ctrl-C with a half-typed line: cleared, still here
        mark = len(term.screen)
        term.type(b"after the clear\r")
        assert bob.wait_out("after the clear") == "<alice> after the clear"
        term.expect_after(mark, b"<alice>")  # our echo: nothing is being printed any more
        # Ctrl-C on an empty line: leave. A Ctrl-C typed while a line is printed above the
        # prompt becomes a SIGINT this pty cannot deliver (see the paste test): press again.
        for _ in range(10):
            term.type(b"\x03")
            if term.exit_code(1.0) is not None:
                break
        assert term.exit_code() == 0, bytes(term.screen)[-2000:]
        assert not any("never sent" in line for line in bob.out)
    finally:
        term.close()
    bob.wait_out("* alice left")
    bob.close_stdin()
    assert bob.wait_exit() == 0


def _paste(lines: list[str]) -> bytes:
    return b"\x1b[200~" + "\n".join(lines).encode() + b"\x1b[201~"


def test_a_paste_is_confirmed_paced_and_cancellable(
    pki: TestPKI, spawn_server: Any, spawn_client: Any
) -> None:
    """A 30-line paste against --rate 20 --burst 5: asked first, then every line arrives; a
    second paste is cancelled with Ctrl-C while queued and the rest is never sent."""
    server = spawn_server(pki.dir, "--rate", "20", "--burst", "5")
    addr = f"localhost:{server.port}"
    bob = spawn_client("--cert", pki.user("bob"), addr)
    bob.wait_out("* welcome bob")
    term = Terminal("--cert", pki.user("paster"), addr)
    try:
        term.expect(b"welcome paster", then=b"paster>")
        first = [f"pasted line {i:02d}" for i in range(30)]
        term.type(_paste(first))
        term.type(b"\r")
        term.expect(b"send a paste of 30 lines? [y/N]")
        term.type(b"y\r")
        term.expect(b"more lines")  # the toolbar: "sending N more lines ..."
        bob.wait_out("pasted line 29")
        got = [line for line in bob.out if "pasted line" in line]
        assert got == [f"<paster> {line}" for line in first]

        second = [f"slow line {i:03d}" for i in range(300)]  # 15 s at 20/s
        term.type(_paste(second))
        term.type(b"\r")
        term.expect(b"send a paste of 300 lines? [y/N]")
        mark = len(term.screen)
        term.type(b"y\r")
        term.expect_after(mark, b"slow line 010")
        # Ctrl-C: what is still queued is dropped. While a line is printed above the prompt the
        # tty is in cooked mode for a moment, where Ctrl-C is a SIGINT (handled the same way in
        # a terminal, but this pty is nobody's controlling terminal, so it is lost): press again,
        # as a person would.
        for _ in range(10):
            term.type(b"\x03")
            with term.changed:
                if term.changed.wait_for(lambda: b"queued lines not sent" in term.screen, 1.0):
                    break
        term.expect(b"cancelled: ", then=b"queued lines not sent")
        term.type(b"/quit\r")
        assert term.exit_code() == 0, bytes(term.screen)[-2000:]
        bob.wait_out("* paster left")
        assert "<paster> slow line 299" not in bob.out

        term2 = Terminal("--cert", pki.user("paster"), addr)
        try:  # a paste the user declines is not sent at all
            term2.expect(b"welcome paster", then=b"paster>")
            term2.type(_paste([f"declined {i}" for i in range(8)]))
            term2.type(b"\r")
            term2.expect(b"send a paste of 8 lines? [y/N]")
            term2.type(b"n\r")
            term2.expect(b"paste of 8 lines not sent")
            term2.type(b"/quit\r")
            assert term2.exit_code() == 0
        finally:
            term2.close()
        bob.wait_out("* paster left")
        assert not any("declined" in line for line in bob.out)
    finally:
        term.close()
    bob.close_stdin()
    assert bob.wait_exit() == 0


def test_reconnect_is_one_line_and_a_summary_and_the_room_is_remembered(
    fresh_pki: TestPKI, spawn_server: Any, tmp_path: Any
) -> None:
    """While the server is down the attempts update one toolbar line; back, one summary. The
    bundle and server used are remembered: the next 'mtlschat client' needs no arguments."""
    server = spawn_server(fresh_pki.dir)
    addr = f"localhost:{server.port}"
    config = {"XDG_CONFIG_HOME": str(tmp_path)}
    term = Terminal("--cert", fresh_pki.user("alice"), addr, env=config)
    try:
        term.expect(b"welcome alice", then=b"alice>")
        server.stop()
        term.expect(b"offline, attempt 1", then=b"cannot")  # the toolbar, updated in place
        restarted = spawn_server(fresh_pki.dir, port=server.port, log=server.log_path)
        term.expect(b"reconnected to", then=b"attempts")
        assert _lines_with(term.screen, b"reconnecting\xe2\x80\xa6") == 1
        term.type(b"/quit\r")
        assert term.exit_code() == 0, bytes(term.screen)[-2000:]
    finally:
        term.close()
    saved = (tmp_path / "mtlschat" / "client.toml").read_text()
    assert str(fresh_pki.user("alice")) in saved and addr in saved
    again = Terminal(env=config)
    try:
        again.expect(b"welcome alice", then=b"alice>")
        again.type(b"\x04")
        assert again.exit_code() == 0
    finally:
        again.close()
    restarted.stop()
