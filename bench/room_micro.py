"""Micro-benchmark of the sans-I/O room: server CPU per message and per delivery, no TLS.

Drives :class:`mtlschat.chat.room.Room` the way the event loop does -- ``feed`` a chunk from one
client, ``flush()`` at the end of the round, ``take_output()`` for every ready session -- with
200 sessions and 10,000 chat messages, and prints microseconds per message and per delivery (one
message reaching one peer). TLS and socket costs are not included: this is the room's share.
Times are this process's CPU time (best of --repeat runs), split into ``feed`` (per-message work)
and ``flush`` + ``take_output`` (per-peer-per-round work).

The ``relay`` rows run the same load over 2 relayed rooms ("nodes", issue 13) in this process,
joined by a list standing in for the Redis stream: every round each node's outbox is given
offsets and delivered to every node. Their CPU is summed over both nodes (``feed`` = feed +
take_outbox + the offsets), so a row compares with its single-room row as the cost of relay mode
per delivery, Redis and its I/O left out.

    .venv/bin/python bench/room_micro.py [--sessions 200] [--messages 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import time
import timeit
from dataclasses import dataclass

from mtlschat.chat.room import Mode, Room, RoomSettings
from mtlschat.cluster.stream import run_ends
from mtlschat.history.store import CHAT_KINDS, Record


@dataclass
class Result:
    label: str
    per_round: int
    seconds: float
    feed_seconds: float  # of which: feed() (the per-message work)
    messages: int
    deliveries: int
    rounds: int


def run(
    sessions: int,
    messages: int,
    per_round: int,
    json_share: float,
    label: str,
    nodes: int = 0,
    burst: bool = False,
) -> Result:
    """One scenario; ``nodes`` > 0: that many relayed rooms, sessions spread over them;
    ``burst``: one sender, each round's lines in one read (else one line a read, senders in
    turn)."""
    # Rate limiting stays on (the bucket check is on the happy path) but never bites.
    settings = RoomSettings(rate=1e9, burst=10**9)
    rooms = [Room(settings, relay=True, node=f"n{i}") for i in range(nodes)] or [Room(settings)]
    n_json = round(sessions * json_share)
    members = [
        rooms[i % len(rooms)].open(f"user{i}", Mode.JSON if i < n_json else Mode.TEXT)
        for i in range(sessions)
    ]
    log: list[Record] = []
    offset = 0

    def relay() -> None:  # the engine and Redis: offsets in one order, delivered everywhere
        nonlocal offset
        log.clear()
        for room in rooms:
            for item in room.take_outbox():
                r = item.record
                if r.kind in CHAT_KINDS:
                    offset += 1
                    r = r._replace(offset=offset)
                log.append(r)

    def end_round() -> None:
        runs = run_ends(log)  # (what a log entry's groups tell the engine)
        for room in rooms:
            if nodes:
                room.deliver(log, runs)
            for s in room.flush():
                s.take_output()

    relay()
    end_round()  # welcomes and joins are not part of the measurement
    lines = [f"message number {i} with some ordinary chat text\n".encode() for i in range(64)]
    before = sum(room.counters.deliveries for room in rooms)
    # CPU time of this process, not wall time: the machine may be shared with other work.
    clock = time.process_time
    t0 = clock()
    feeding = 0.0
    sent = rounds = 0
    chunk = b"".join(lines[i % 64] for i in range(per_round))
    while sent < messages:
        t1 = clock()
        if burst:
            k = min(per_round, messages - sent)
            data = chunk if k == per_round else b"".join(lines[i % 64] for i in range(k))
            rooms[0].feed(members[0], data)
            sent += k
        for _ in range(0 if burst else min(per_round, messages - sent)):
            s = members[sent % sessions]
            rooms[sent % len(rooms)].feed(s, lines[sent % 64])
            sent += 1
        if nodes:
            relay()
        feeding += clock() - t1
        end_round()
        rounds += 1
    seconds = clock() - t0
    assert sum(room.counters.messages for room in rooms) == messages
    deliveries = sum(room.counters.deliveries for room in rooms) - before
    return Result(label, per_round, seconds, feeding, messages, deliveries, rounds)


def main(argv: list[str] | None = None) -> None:
    """Run every scenario and print a table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args(argv)

    scenarios = [
        ("json, 1 msg/round", 1, 1.0),
        ("json, 10 msgs/round", 10, 1.0),
        ("json, 100 msgs/round", 100, 1.0),
        ("text, 10 msgs/round", 10, 0.0),
        ("mixed 50/50, 10 msgs/round", 10, 0.5),
        ("relay 2 nodes, json, 10/round", 10, 1.0, 2),
        ("relay 2 nodes, json, 100/round", 100, 1.0, 2),
        ("text, 1 sender, 2000/read", 2000, 0.0, 0, True),
        ("relay 2 nodes, 2000/read", 2000, 0.0, 2, True),
    ]
    print(
        f"room micro-benchmark: {args.sessions} sessions, {args.messages} messages, "
        f"Python {platform.python_version()} ({platform.python_implementation()})"
    )
    # Context for the numbers: what one no-op Python call costs on this (possibly shared) machine.
    call_ns = min(timeit.repeat(lambda: None, number=200_000, repeat=5)) / 200_000 * 1e9
    print(f"calibration: a no-op Python call takes {call_ns:.0f} ns here")
    print(
        f"{'scenario':28} {'us/message':>10} {'us/delivery':>11} {'feed us/msg':>11} "
        f"{'flush+take us/peer/round':>24}"
    )
    for label, per_round, json_share, *nodes in scenarios:
        best = min(
            (
                run(args.sessions, args.messages, per_round, json_share, label, *nodes)
                for _ in range(args.repeat)
            ),
            key=lambda r: r.seconds,
        )
        per_peer_round = (best.seconds - best.feed_seconds) / (best.rounds * args.sessions)
        print(
            f"{best.label:28} {best.seconds / best.messages * 1e6:10.2f} "
            f"{best.seconds / best.deliveries * 1e6:11.4f} "
            f"{best.feed_seconds / best.messages * 1e6:11.2f} {per_peer_round * 1e6:24.3f}"
        )


if __name__ == "__main__":
    main()
