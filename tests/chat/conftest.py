"""Shared fixtures for the sans-I/O chat tests: a fake clock and a room harness (bytes in/out)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mtlschat.chat.room import Mode, Room, RoomSettings, Session


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class Harness:
    """Drives a Room the way the event loop does, and records what each session received."""

    def __init__(self, settings: RoomSettings | None = None) -> None:
        self.clock = FakeClock()
        # One clock for timers and timestamps here; tests of the two apart build their own room.
        self.room = Room(settings or RoomSettings(), clock=self.clock, wall=self.clock)
        self._received: dict[int, bytearray] = {}  # everything each session was sent
        self._read: dict[int, int] = {}  # how much of it the test has taken

    def open(self, name: str, mode: Mode = Mode.JSON) -> Session:
        """Open a session as the loop does after a handshake; its welcome (or refusal) waits
        for the next :meth:`flush`, so other input can be fed in the same round first.
        """
        s = self.room.open(name, mode)
        self._received[s.id] = bytearray()
        self._read[s.id] = 0
        return s

    def join(self, name: str, mode: Mode = Mode.JSON) -> Session:
        """Open a session, flush, and drop its welcome (tests that want it use :meth:`open`)."""
        s = self.open(name, mode)
        self.flush()
        self.take_bytes(s)
        return s

    def send(self, s: Session, *lines: str) -> None:
        self.room.feed(s, b"".join(line.encode() + b"\n" for line in lines))

    def flush(self) -> list[Session]:
        ready = list(self.room.flush())
        assert len({s.id for s in ready}) == len(ready), "flush returned a session twice"
        for s in ready:
            data = s.take_output()
            assert data, "flush returned a session with no output"
            self._received[s.id] += data
        return ready

    def take_bytes(self, s: Session) -> bytes:
        """What ``s`` received since the last take."""
        buf = self._received[s.id]
        data = bytes(buf[self._read[s.id] :])
        self._read[s.id] = len(buf)
        return data

    def take(self, s: Session) -> list[dict[str, Any]]:
        """The JSON objects ``s`` received since the last take (``s`` must be in JSON mode)."""
        return [json.loads(line) for line in self.take_bytes(s).decode().splitlines()]

    def take_text(self, s: Session) -> list[str]:
        return self.take_bytes(s).decode().splitlines()


@pytest.fixture
def h() -> Harness:
    return Harness()


@pytest.fixture
def make_harness() -> type[Harness]:
    return Harness
