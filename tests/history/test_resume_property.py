"""Property: whatever the disconnects, each client shows the room's log exactly once, in order.

The room (over a real SQLite history file) and the client's own state machine
(:class:`~mtlschat.client.protocol.ChatState`) are driven in-process, the way the event loop and
the client's ``Link`` drive them. A cut delivers only a prefix of what the server had queued for
that client (the rest is lost on the wire); the client later reconnects and resumes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mtlschat.chat.room import Mode, Room, Session
from mtlschat.client.protocol import ChatState, Event, parse_line
from mtlschat.history.journal import Journal
from mtlschat.history.sqlite import SQLiteStore
from mtlschat.history.store import DM

NAMES = ("alice", "bob", "carol")

# (who, what, n): say n lines, /me, /msg NAMES[n], a loop round, a cut that lets the first n
# queued lines through, a reconnect.
ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(NAMES),
        st.sampled_from(["say", "say", "me", "dm", "round", "round", "cut", "back"]),
        st.integers(0, 5),
    ),
    max_size=50,
)


class Client:
    """One ``mtlschat client``: a ChatState, and what it displayed."""

    def __init__(self, room: Room, name: str) -> None:
        self.room = room
        self.name = name
        self.state = ChatState()
        self.shown: list[tuple[int, str]] = []  # (id, text) of server lines it displayed
        self.origins: set[int] = set()
        self.session: Session | None = None
        self.welcomed = False
        self.outbox: list[str] = []  # typed before the welcome: sent after the client's replies
        self.connect()

    def connect(self) -> None:
        self.session = self.room.open(self.name, Mode.JSON)
        self.origins.add(self.session.origin)
        self.welcomed = False

    def type(self, line: str) -> None:
        self.outbox.append(line)
        if self.welcomed:
            self.send_outbox()

    def send_outbox(self) -> None:
        assert self.session is not None
        for line in self.outbox:
            self.room.feed(self.session, line.encode() + b"\n")
        self.outbox = []

    def receive(self, lines: list[bytes]) -> None:
        for raw in lines:
            event = parse_line(raw.decode())
            replies, shown = self.state.receive(event)
            for reply in replies:
                assert self.session is not None
                self.room.feed(self.session, reply.encode() + b"\n")
            if event.type == "welcome":
                self.welcomed = True
                self.send_outbox()
            for ev in shown:
                self.show(ev)

    def show(self, ev: Event) -> None:
        if ev.type in ("msg", "action", "dm") and ev.data.get("history") in (None, "resume"):
            self.shown.append((int(ev.data["id"]), ev.text("text")))


class World:
    def __init__(self, path: Path) -> None:
        self.now = 1_700_000_000.0
        self.journal = Journal(SQLiteStore.open(path))
        self.room = Room(clock=lambda: self.now, wall=lambda: self.now, history=self.journal)
        self.clients = {name: Client(self.room, name) for name in NAMES}
        self.counter = 0

    def round(self, cut: Client | None = None, keep: int = 0) -> bool:
        ready = self.room.flush()
        for s in ready:
            out = s.take_output().splitlines()
            for c in self.clients.values():
                if c.session is s:
                    c.receive(out[:keep] if c is cut else out)
        return bool(ready)

    def settle(self) -> None:
        for _ in range(20):
            if not self.round():
                return
        raise AssertionError("the room never went quiet")

    def act(self, who: str, what: str, n: int) -> None:
        c = self.clients[who]
        self.now += 1
        if what == "round":
            self.round()
        elif what == "back":
            if c.session is None:
                c.connect()
        elif c.session is None:
            return
        elif what == "cut":
            self.round(cut=c, keep=n)
            self.room.end(c.session, "network", gone=True)
            c.session = None
            c.welcomed = False
        else:
            for _ in range(n if what == "say" else 1):
                self.counter += 1
                line = {"say": "line {}", "me": "/me waves {}", "dm": "/msg {} dm {}"}[what]
                args = (NAMES[n % 3], self.counter) if what == "dm" else (self.counter,)
                c.type(line.format(*args))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=ACTIONS)
# A DM's echo lost in a cut comes back on resume (own room lines do not: shown when typed).
@example(script=[("alice", "dm", 1), ("alice", "cut", 0), ("alice", "back", 0)])
# Lines said while away, some delivered just before the cut.
@example(script=[("bob", "say", 3), ("alice", "cut", 1), ("bob", "say", 2), ("alice", "back", 0)])
def test_every_client_shows_the_room_log_exactly_once_in_order(
    tmp_path_factory: pytest.TempPathFactory, script: list[tuple[str, str, int]]
) -> None:
    world = World(tmp_path_factory.mktemp("resume") / "h.db")
    world.settle()
    for who, what, n in script:
        world.act(who, what, n)
    for c in world.clients.values():
        if c.session is None:
            c.connect()
    world.settle()
    assert world.journal.degraded is None
    store = world.journal.store
    for c in world.clients.values():
        # The room's log as this member may read it, minus its own room lines (shown when typed).
        expected = [
            (r.offset, r.text)
            for r in store.last("main", 10_000, c.name)
            if r.kind == DM or r.origin not in c.origins
        ]
        assert c.shown == expected, c.name
    world.journal.close()
