"""Hypothesis: what each client receives does not depend on how the driver groups loop rounds.

Run 1 flushes after every single operation (rounds of one event: the trivial case). Run 2 flushes
only now and then, so broadcasts, own lines, private lines, joins, leaves and mode switches share
rounds and go through the sliced/shared-join path. Every session must receive the same bytes;
a session the driver closes mid-round may lose that round's tail (its transport is gone), so its
output must be a prefix.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mtlschat.chat.room import Mode, Room, RoomSettings, Session

NAMES = ["alice", "bob", "Alice", "carol"]
LINES = [
    b"hello\n",
    b"/me waves\n",
    b"/msg bob hi\n",
    b"/msg ALICE yo\n",
    b"/msg nobody x\n",
    b"/who\n",
    b"/mode json\n",
    b"/mode text\n",
    b"/mode json\n/mode text\n",
    b"/mode json\n",  # (again: switches mid-round are the subtle case)
    b"/mode text\n",
    b"/quit bye\n",
    b"/nope\n",
    b"//slash\n",
    b"\n",
    b"x" * 40 + b"\n",
    b"\xff\xfe\n",
    b"/help\n",
    b"/pong\n",
    b"par",
    b"tial\n",
    b"a\nb\nc\n",
]

opens = st.tuples(st.just("open"), st.integers(0, len(NAMES) - 1), st.sampled_from(list(Mode)))
ops = st.lists(
    st.one_of(
        opens,
        st.tuples(st.just("feed"), st.integers(0, 4), st.sampled_from(LINES)),
        st.tuples(st.just("feed"), st.integers(0, 4), st.sampled_from(LINES)),
        st.tuples(st.just("close"), st.integers(0, 4), st.just(0)),
        st.tuples(st.just("kick"), st.integers(0, 4), st.just(0)),
        st.tuples(st.just("tick"), st.integers(0, 40), st.just(0)),
        st.tuples(st.just("flush"), st.just(0), st.just(0)),
    ),
    max_size=60,
)
# A few sessions up front, so most examples exercise a populated room.
scripts = st.tuples(st.lists(opens, min_size=2, max_size=4), ops).map(lambda t: t[0] + t[1])


Script = list[tuple[str, int, object]]


def run(script: Script, flush_every_op: bool) -> tuple[list[bytes], set[int]]:
    now = [1_700_000_000.0]
    room = Room(
        RoomSettings(max_line=32, rate=2.0, burst=3, keepalive=30, idle_timeout=70),
        clock=lambda: now[0],
        wall=lambda: now[0],
    )
    sessions: list[Session] = []
    got: list[bytearray] = []
    closed: set[int] = set()

    def flush() -> None:
        for s in room.flush():
            got[s.id - 1] += s.take_output()

    for op, a, b in script:
        if op == "open":
            assert isinstance(b, Mode)
            sessions.append(room.open(NAMES[a], b))
            got.append(bytearray())
        elif op == "flush":
            flush()
        elif op == "tick":
            now[0] += a
            room.tick()
        elif sessions:
            s = sessions[a % len(sessions)]
            if op == "feed":
                assert isinstance(b, bytes)
                room.feed(s, b)
            elif op == "kick":
                room.end(s, "kicked")
            elif s.id - 1 not in closed:
                room.end(s, "gone", gone=True)
                closed.add(s.id - 1)
        if flush_every_op:
            flush()
    flush()
    return [bytes(g) for g in got], closed


@settings(max_examples=250, deadline=None)
@given(script=scripts)
def test_round_grouping_does_not_change_what_anyone_receives(
    script: list[tuple[str, int, object]],
) -> None:
    reference, _ = run(script, flush_every_op=True)
    batched, closed = run(script, flush_every_op=False)
    assert len(reference) == len(batched)
    for i, (want, have) in enumerate(zip(reference, batched, strict=True)):
        if i in closed:
            assert want.startswith(have)
        else:
            assert want == have
        # Each line is complete and every JSON line parses; message ids only go up.
        assert not have or have.endswith(b"\n")
        ids = []
        for line in have.decode().splitlines():
            if line.startswith("{"):
                obj = json.loads(line)
                if "id" in obj:
                    ids.append(obj["id"])
        assert ids == sorted(set(ids))
