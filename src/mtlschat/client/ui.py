"""The interactive terminal UI (prompt_toolkit).

Incoming lines are printed *above* the prompt with ``print_formatted_text``, which, while the
prompt runs, erases it, prints, and redraws it: whatever the user has half typed stays intact.
A line is shown as sent when it is handed to the connection (paced to the room's rate, see
:mod:`.outgoing`); the toolbar under the prompt says what is still queued and how reconnecting
goes, on one line that is updated rather than repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.output import Output
from prompt_toolkit.shortcuts import print_formatted_text

from mtlschat.ca.names import name_key
from mtlschat.client.connection import Link
from mtlschat.client.protocol import COMMANDS, ChatState, Event, is_quit, local_echo
from mtlschat.client.render import STYLE, mentions, render_status, render_styled

PASTE_CONFIRM_LINES = 5  # ask before sending a paste of more lines (irssi's default)


class ChatCompleter(Completer):
    """Tab completion: ``/commands`` at the start of the line, online names elsewhere.

    As in irssi and weechat, a name at the start of the line gets ``: `` after it (addressing
    someone), a name elsewhere and a command get a space, so typing can go straight on.
    """

    def __init__(self, state: ChatState) -> None:
        self.state = state

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        """Completions for the word before the cursor."""
        word = document.get_word_before_cursor(WORD=True)
        at_start = document.text_before_cursor.lstrip() == word
        command = at_start and word.startswith("/")
        words: Iterable[str] = COMMANDS if command else self.state.online
        suffix = ": " if at_start and not command else " "
        for candidate in words:
            if candidate.lower().startswith(word.lower()) and candidate != word:
                yield Completion(candidate + suffix, start_position=-len(word), display=candidate)


class ChatUI:
    """The prompt plus everything printed above it. ``bind`` connects it to a :class:`Link`."""

    def __init__(
        self,
        state: ChatState,
        *,
        input: Input | None = None,
        output: Output | None = None,
        paste_confirm: int = PASTE_CONFIRM_LINES,
        bell: bool = True,
        title: bool = True,
    ) -> None:
        self.state = state
        self.output = output
        self.paste_confirm = paste_confirm
        self.bell = bell
        self.title = title
        self.unread = 0  # lines from others since the user last sent something
        self._down: tuple[float, int] | None = None  # (since, attempts) while reconnecting
        self._toolbar_status = ""
        self._recent: deque[str] = deque(maxlen=50)  # lines sent lately, for refusals
        keys = KeyBindings()
        keys.add("c-c")(self._ctrl_c)
        # While a line is printed above the prompt the terminal is briefly in cooked mode, where
        # Ctrl-C is a SIGINT, which prompt_toolkit turns into this key: the same rules apply.
        keys.add(Keys.SIGINT)(self._ctrl_c)
        self.session: PromptSession[str] = PromptSession(
            message=self._prompt,
            completer=ChatCompleter(state),
            complete_while_typing=False,
            # The sent line comes back as a timestamped chat line: don't leave the raw input too.
            erase_when_done=True,
            history=InMemoryHistory(),
            style=STYLE,
            key_bindings=keys,
            input=input,
            output=output,
        )
        self.send: Callable[[str], None] = lambda line: None
        self.quit: Callable[[str], None] = lambda line: None
        self.connected: Callable[[], bool] = lambda: True
        self.queued: Callable[[], int] = lambda: 0
        self.cancel_queued: Callable[[], int] = lambda: 0

    def bind(self, link: Link) -> None:
        """Send typed lines through ``link``."""
        self.send = link.send
        self.quit = lambda line: link.quit(line=line)
        self.connected = lambda: link.connected
        self.queued = lambda: link.queued
        self.cancel_queued = link.cancel_queued

    def _prompt(self) -> FormattedText:
        return FormattedText([("class:prompt", f"{self.state.me or '…'}> ")])

    def _toolbar_text(self) -> str:
        parts: list[str] = []
        if self._toolbar_status:
            parts.append(self._toolbar_status)
        waiting = self.queued()
        if waiting:
            where = "when reconnected" if not self.connected() else "…"
            parts.append(f"sending {waiting} more lines {where} (Ctrl-C cancels)")
        return " | ".join(parts)

    def _toolbar(self) -> FormattedText:
        return FormattedText([("class:status", self._toolbar_text())])

    def _refresh(self) -> None:
        """Redraw; the toolbar line is there only while it has something to say."""
        self.session.bottom_toolbar = self._toolbar if self._toolbar_text() else None
        app = self.session.app
        if app.is_running:
            app.invalidate()

    def _ctrl_c(self, event: KeyPressEvent) -> None:
        """As in a shell: clear a half-typed line; else cancel a queued paste; else leave."""
        buffer = event.app.current_buffer
        if buffer.text:
            buffer.reset()
            return
        dropped = self.cancel_queued()
        if dropped:
            self.note(f"cancelled: {dropped} queued lines not sent", error=True)
            self._refresh()
            return
        event.app.exit(exception=KeyboardInterrupt())

    def show(self, text: FormattedText) -> None:
        """Print ``text`` above the prompt."""
        print_formatted_text(text, style=STYLE, output=self.output)

    def show_event(self, event: Event) -> None:
        """A server event (or a local echo) as a styled line; a DM or a mention rings."""
        if event.type == "error" and not event.local:
            event = self._refused(event)
        styled = render_styled(event, self.state.me)
        if styled is not None:
            self.show(styled)
        self._notice(event)

    def _refused(self, event: Event) -> Event:
        """An error answers one of our lines: say which one was not delivered.

        The server answers lines in order and says nothing about accepted chat lines, so the
        line is the latest one sent that this kind of refusal can apply to.
        """
        code = event.text("code")
        fits: Callable[[str], bool] = {
            "unknown_user": lambda line: line.lower().startswith("/msg "),
            "unknown_command": lambda line: line.startswith("/") and not line.startswith("//"),
            "bad_usage": lambda line: line.startswith("/") and not line.startswith("//"),
        }.get(code, lambda line: True)
        for line in reversed(self._recent):
            if fits(line):
                self._recent.remove(line)
                shown = line if len(line) <= 60 else line[:59] + "…"
                text = f'not delivered: "{shown}" ({event.text("text") or code})'
                return Event("error", {**event.data, "text": text})
        return event

    def show_sent(self, line: str) -> None:
        """A line handed to the connection: shown now as ours (the server does not echo it)."""
        self._recent.append(line)
        echo = local_echo(line, self.state.me, time.time())
        if echo is not None:
            self.show_event(echo)
        self._refresh()

    def _notice(self, event: Event) -> None:
        if event.local or event.type not in ("msg", "action", "dm"):
            return
        me = self.state.me
        if not me or name_key(event.text("from")) == name_key(me):
            return
        self.unread += 1
        called = event.type == "dm" or mentions(event.text("text"), me)
        out = self.session.app.output
        if called and self.bell:
            out.bell()
        if self.title:
            who = f" ({event.text('from')} called you)" if called else ""
            out.set_title(f"[{self.unread}] mtlschat: {me}{who}")
            out.flush()

    def _seen(self) -> None:
        """The user is here (they sent something): reset the unread count in the title."""
        if self.unread and self.title:
            self.unread = 0
            out = self.session.app.output
            out.set_title(f"mtlschat: {self.state.me}")
            out.flush()

    def note(self, text: str, *, error: bool = False) -> None:
        """A line of the client's own (not about the connection), printed at once."""
        self.show(render_status(text, error=error))

    def show_status(self, text: str, error: bool = False) -> None:
        """A line about the connection. While reconnecting, the attempts update the toolbar
        instead of each printing a line; coming back prints one summary."""
        if not error:
            if self._down is not None:
                since, attempts = self._down
                self._down = None
                self._toolbar_status = ""
                text = f"{text} (after {attempts} attempts, {time.monotonic() - since:.0f} s)"
            self.show(render_status(text, error=False))
            self._refresh()
            return
        if self._down is None:
            self._down = (time.monotonic(), 0)
            self.show(render_status(text.split(";")[0] + "; reconnecting…", error=True))
        since, attempts = self._down
        self._down = (since, attempts + 1)
        # Short, and the attempt first: the toolbar is one line of the terminal's width.
        self._toolbar_status = f"offline, attempt {attempts + 1}: {text}"
        self._refresh()

    def submit(self, text: str) -> bool:
        """Handle what the user entered; False once they have left.

        A bracketed paste can hold several lines: each is sent on its own, paced to the room's
        rate by the connection, and shown as it goes.
        """
        self._seen()
        for line in text.splitlines():
            if not line.strip():
                continue
            if is_quit(line):
                self.quit(line)
                return False
            self.send(line)
        if not self.connected():
            self.note("not connected: will send when reconnected")
        return True

    async def _confirm(self, lines: int) -> bool:
        answer = await self.session.prompt_async(message=f"send a paste of {lines} lines? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    async def input_loop(self) -> None:
        """Read lines until ``/quit``, Ctrl-D or Ctrl-C (on an empty line)."""
        while True:
            try:
                line = await self.session.prompt_async(message=self._prompt)
                count = sum(1 for part in line.splitlines() if part.strip())
                if count > self.paste_confirm > 0 and not await self._confirm(count):
                    self.note(f"paste of {count} lines not sent")
                    continue
            except (EOFError, KeyboardInterrupt):
                self.quit("/quit")
                return
            if not self.submit(line):
                return


async def run_ui(ui: ChatUI, link: Link) -> None:
    """Run the prompt and the connection together until the user leaves or a fatal error."""
    ui.bind(link)
    connection = asyncio.create_task(link.run())
    typing = asyncio.create_task(ui.input_loop())
    done, _ = await asyncio.wait({connection, typing}, return_when=asyncio.FIRST_COMPLETED)
    if connection not in done:
        # The user left; the link sends /quit and waits (briefly) for the server's goodbye.
        await connection
    typing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await typing
    connection.result()  # re-raise a ClientError
