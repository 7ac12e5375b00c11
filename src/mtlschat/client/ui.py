"""The interactive terminal UI (prompt_toolkit).

Incoming lines are printed *above* the prompt with ``print_formatted_text``, which, while the
prompt runs, erases it, prints, and redraws it: whatever the user has half typed stays intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output
from prompt_toolkit.shortcuts import print_formatted_text

from mtlschat.client.connection import Link
from mtlschat.client.protocol import COMMANDS, ChatState, Event, is_quit, local_echo
from mtlschat.client.render import STYLE, render_status, render_styled


class ChatCompleter(Completer):
    """Tab completion: ``/commands`` at the start of the line, online names elsewhere."""

    def __init__(self, state: ChatState) -> None:
        self.state = state

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        """Completions for the word before the cursor."""
        word = document.get_word_before_cursor(WORD=True)
        at_start = document.text_before_cursor.lstrip() == word
        words: Iterable[str] = COMMANDS if at_start and word.startswith("/") else self.state.online
        for candidate in words:
            if candidate.lower().startswith(word.lower()) and candidate != word:
                yield Completion(candidate, start_position=-len(word))


class ChatUI:
    """The prompt plus everything printed above it. ``bind`` connects it to a :class:`Link`."""

    def __init__(
        self, state: ChatState, *, input: Input | None = None, output: Output | None = None
    ) -> None:
        self.state = state
        self.output = output
        self.session: PromptSession[str] = PromptSession(
            message=self._prompt,
            completer=ChatCompleter(state),
            complete_while_typing=False,
            # The sent line comes back as a timestamped chat line: don't leave the raw input too.
            erase_when_done=True,
            history=InMemoryHistory(),
            style=STYLE,
            input=input,
            output=output,
        )
        self.send: Callable[[str], None] = lambda line: None
        self.quit: Callable[[str], None] = lambda line: None
        self.connected: Callable[[], bool] = lambda: True

    def bind(self, link: Link) -> None:
        """Send typed lines through ``link``."""
        self.send = link.send
        self.quit = lambda line: link.quit(line=line)
        self.connected = lambda: link.connected

    def _prompt(self) -> FormattedText:
        return FormattedText([("class:prompt", f"{self.state.me or '…'}> ")])

    def show(self, text: FormattedText) -> None:
        """Print ``text`` above the prompt."""
        print_formatted_text(text, style=STYLE, output=self.output)

    def show_event(self, event: Event) -> None:
        """A server event (or a local echo) as a styled line."""
        styled = render_styled(event, self.state.me)
        if styled is not None:
            self.show(styled)

    def show_status(self, text: str, error: bool = False) -> None:
        """A line about the connection."""
        self.show(render_status(text, error=error))

    def submit(self, text: str) -> bool:
        """Handle what the user entered; False once they have left.

        A bracketed paste can hold several lines: each is sent (and shown) on its own.
        """
        for line in text.splitlines():
            if not line.strip():
                continue
            if is_quit(line):
                self.quit(line)
                return False
            echo = local_echo(line, self.state.me, time.time())
            if echo is not None:
                self.show_event(echo)
            if not self.connected():
                self.show_status("not connected: will send when reconnected")
            self.send(line)
        return True

    async def input_loop(self) -> None:
        """Read lines until ``/quit``, Ctrl-D or Ctrl-C."""
        while True:
            try:
                line = await self.session.prompt_async()
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
