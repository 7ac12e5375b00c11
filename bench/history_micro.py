"""Micro-benchmarks of the history, in-process and on a real file (no TLS, no sockets).

- the room's CPU per message with history off and on (rounds of 1 message: paced; of 500:
  burst), search indexing and retention included (the room's tick runs as in the server);
- the store's sustained insert rate (rows/s) for rounds of 1, 20 and 500 lines;
- the server CPU to replay 1,000 missed lines to a reconnecting client (``/resume``);
- the server CPU of one join with the default replay (20 lines) while 1,000 members are online.

    .venv/bin/python bench/history_micro.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mtlschat.chat.room import Mode, Room, RoomSettings
from mtlschat.history.journal import Journal
from mtlschat.history.sqlite import SQLiteStore
from mtlschat.history.store import MSG, Record

TEXT = "message number {} with some ordinary chat text about the release"


def _room(history: Journal | None, members: int) -> tuple[Room, list[object]]:
    room = Room(RoomSettings(rate=0, announce_limit=0), history=history)
    sessions = [room.open(f"user{i}", Mode.JSON) for i in range(members)]
    for s in room.flush():
        s.take_output()
    return room, list(sessions)


def room_cost(directory: Path, history: bool, per_round: int, messages: int) -> float:
    """Room CPU (microseconds) per message, 200 members, ``per_round`` messages per round."""
    journal = (
        Journal(SQLiteStore.open(directory / f"r{time.monotonic_ns()}.db")) if history else None
    )
    room, sessions = _room(journal, 200)
    sender = sessions[0]
    lines = [(TEXT.format(i) + "\n").encode() for i in range(messages)]
    chunks = [b"".join(lines[i : i + per_round]) for i in range(0, messages, per_round)]
    t0 = time.process_time()
    last_tick = 0.0
    for n, chunk in enumerate(chunks):
        room.feed(sender, chunk)  # type: ignore[arg-type]
        for s in room.flush():
            s.take_output()
        if (n + 1) * per_round // 1000 != last_tick:  # the server ticks about once a second
            last_tick = (n + 1) * per_round // 1000
            room.tick()
    if journal is not None:
        while journal.store.trim(time.time(), 5000):  # index what is left: it is part of the cost
            pass
    spent = time.process_time() - t0
    if journal is not None:
        journal.close()
    return spent / messages * 1e6


def insert_rate(directory: Path, per_round: int, rows: int = 20_000) -> float:
    """Rows per second of CPU, one transaction per round, indexing included."""
    store = SQLiteStore.open(directory / f"i{time.monotonic_ns()}.db")
    t0 = time.process_time()
    now = time.time()
    for first in range(1, rows + 1, per_round):
        store.append(
            "main",
            [Record(i, now, MSG, "alice", TEXT.format(i)) for i in range(first, first + per_round)],
        )
    while store.trim(time.time(), 5000):
        pass
    spent = time.process_time() - t0
    store.close()
    return rows / spent


def replay_cost(directory: Path, lines: int = 1000) -> float:
    """Server CPU (ms) to answer a /resume that recovers ``lines`` lines."""
    journal = Journal(SQLiteStore.open(directory / f"p{time.monotonic_ns()}.db"))
    room, sessions = _room(journal, 2)
    for i in range(lines):
        room.feed(sessions[0], (TEXT.format(i) + "\n").encode())  # type: ignore[arg-type]
    for s in room.flush():
        s.take_output()
    bob = room.open("bob2", Mode.JSON)
    for s in room.flush():
        s.take_output()
    t0 = time.process_time()
    room.feed(bob, f"/resume {journal.epoch} 0\n".encode())
    out = b"".join(s.take_output() for s in room.flush())
    spent = time.process_time() - t0
    assert out.count(b'"history":"resume"') == lines, out[-200:]
    journal.close()
    return spent * 1e3


def join_cost(directory: Path, history: bool, online: int = 1000, joins: int = 50) -> float:
    """Server CPU (ms) per join (welcome, default replay, join broadcast) at ``online`` members."""
    journal = (
        Journal(SQLiteStore.open(directory / f"j{time.monotonic_ns()}.db")) if history else None
    )
    room, sessions = _room(journal, online)
    for i in range(100):
        room.feed(sessions[i % online], (TEXT.format(i) + "\n").encode())  # type: ignore[arg-type]
    for s in room.flush():
        s.take_output()
    t0 = time.process_time()
    for i in range(joins):
        room.open(f"late{i}", Mode.JSON)
        for s in room.flush():
            s.take_output()
    spent = time.process_time() - t0
    if journal is not None:
        journal.close()
    return spent / joins * 1e3


def median(repeat: int, fn: Callable[..., float], *args: object) -> float:
    return statistics.median(fn(*args) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    r = args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for per_round, label in ((1, "paced (1 msg/round)"), (500, "burst (500 msgs/round)")):
            n = 3000 if per_round == 1 else 20_000
            off = median(r, room_cost, d, False, per_round, n)
            on = median(r, room_cost, d, True, per_round, n)
            print(f"room CPU per message, 200 members, {label}: off {off:.1f} us, on {on:.1f} us"
                  f" (+{on - off:.1f} us, {on / off:.2f}x)")  # fmt: skip
        for per_round in (1, 20, 500):
            rate = median(r, insert_rate, d, per_round)
            print(f"store insert rate, {per_round} lines per transaction: {rate:,.0f} lines/s CPU")
        replay = median(r, replay_cost, d)
        print(f"replay of 1,000 missed lines (/resume): {replay:.1f} ms CPU")
        off = median(r, join_cost, d, False)
        on = median(r, join_cost, d, True)
        print(f"join at 1,000 online: off {off:.2f} ms, on (20-line replay) {on:.2f} ms CPU")


if __name__ == "__main__":
    main()
