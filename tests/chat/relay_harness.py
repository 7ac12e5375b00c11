"""Several relayed Rooms ("nodes") joined by an in-memory ordered log, no I/O.

The log stands in for the Redis stream: it is the sans-I/O interface of relay mode (what the node
engine does with Redis), not a fake Redis. Publishing hands chat lines the next offset, as the
publish script does; every node then delivers the log's new records in the same order.
"""

from __future__ import annotations

from mtlschat.chat.room import Outgoing, Room, RoomSettings
from mtlschat.cluster.stream import run_ends
from mtlschat.history.journal import Journal
from mtlschat.history.memory import MemoryStore
from mtlschat.history.store import CHAT_KINDS, Record

from .conftest import FakeClock, Harness

EPOCH = "e1"


class Log:
    """The one global order of records."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.offset = 0

    def publish(self, items: list[Outgoing]) -> None:
        for item in items:
            self.append(item.record)

    def append(self, record: Record) -> None:
        assert record.offset == 0, "rooms publish with offset 0: the log assigns it"
        if record.kind in CHAT_KINDS:
            self.offset += 1
            record = record._replace(offset=self.offset)
        self.records.append(record)


class Node(Harness):
    """One relayed room and what each of its sessions received."""

    def __init__(
        self, name: str, log: Log, clock: FakeClock, settings: RoomSettings, *, runs: bool = True
    ) -> None:
        super().__init__(settings)
        self.runs = runs  # deliver runs of records at once (as the engine does), or one by one
        self.clock = clock
        self.log = log
        self.name = name
        self.store = MemoryStore(EPOCH, max_lines=1000)
        self.room = Room(
            settings,
            clock=clock,
            wall=clock,
            history=Journal(self.store),
            relay=True,
            node=name,
        )
        self.cursor = 0  # how much of the log this node has delivered

    def mirror_offset(self) -> int:
        """The last offset this node was delivered."""
        assert self.room.history is not None
        return self.room.history.last_offset

    def publish(self) -> None:
        """Send this node's outbox to the log (the engine's pipeline)."""
        self.log.publish(self.room.take_outbox())

    def deliver(self) -> None:
        """Deliver what is new in the log (the engine's stream reader), then end the round."""
        new = self.log.records[self.cursor :]
        self.cursor = len(self.log.records)
        self.room.deliver(new, run_ends(new) if self.runs else None)
        self.flush()


class Cluster:
    """N nodes over one log; ``round()`` is one loop round on every node."""

    def __init__(self, n: int = 3, settings: RoomSettings | None = None) -> None:
        self.clock = FakeClock()
        self.log = Log()
        st = settings or RoomSettings(operators=("op",), join_rate=0, history_join=0)
        # Every other node delivers record by record: what all nodes show must not differ.
        self.nodes = [Node(f"n{i}", self.log, self.clock, st, runs=i % 2 == 0) for i in range(n)]

    def round(self) -> None:
        """Every node publishes its outbox, then every node delivers the log and flushes."""
        for node in self.nodes:
            node.publish()
        for node in self.nodes:
            node.deliver()

    def settle(self) -> None:
        """Rounds until nothing is left to publish (a kick publishes leaves when applied)."""
        for _ in range(10):
            self.round()
            if not any(node.room._outbox for node in self.nodes):
                return
        raise AssertionError("the cluster does not settle")
