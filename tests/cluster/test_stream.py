"""A log entry's payload: packed by the node that publishes, decoded by every node (no Redis)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mtlschat.cluster import stream
from mtlschat.history.store import CHAT_KINDS, Record

KINDS = ["msg", "action", "dm", "join", "leave", "mod"]
records = st.lists(
    st.builds(
        Record,
        st.just(0),
        st.sampled_from([1.5, 2.25]),
        st.sampled_from(KINDS),
        st.sampled_from(["alice", "Bob", "zoë"]),
        st.text(max_size=20),
        st.sampled_from(["", "carol"]),
        st.sampled_from([0, 7]),
        st.just(""),  # (one node's outbox: the entry carries the node)
    ),
    max_size=40,
)


def entry(payload: str, base: int = 10, over: str = "") -> stream.Entry:
    fields = [b"o", str(base).encode(), b"n", b"n1", b"b", b"3", b"p", payload.encode()]
    if over:
        fields += [b"z", over.encode()]
    return stream.decode_fields("1-0", fields)


@given(records)
def test_an_entry_decodes_to_the_records_packed_numbered_from_its_base(batch: list[Record]) -> None:
    got = entry(stream.pack(batch))
    offset = 10
    want = []
    for r in batch:
        if r.kind in CHAT_KINDS:
            offset += 1
        want.append(r._replace(offset=offset if r.kind in CHAT_KINDS else 0, node="n1"))
    assert got.records == want
    assert (got.base, got.last) == (10, offset)
    # Its groups are the runs a node delivers at once.
    assert got.runs == stream.run_ends(got.records)
    assert got.runs == stream.run_ends(batch)


def test_a_round_of_one_senders_lines_is_one_group() -> None:
    batch = [Record(0, 1.5, "msg", "alice", f"line {i}", "", 7) for i in range(3)]
    batch.append(Record(0, 1.5, "msg", "bob", "mine", "", 8))
    groups = json.loads(stream.pack(batch))
    assert groups == [
        [1.5, "msg", "alice", "", 7, ["line 0", "line 1", "line 2"]],
        [1.5, "msg", "bob", "", 8, ["mine"]],
    ]


def test_lines_the_rate_limit_refused_are_dropped_and_take_no_offset() -> None:
    batch = [Record(0, 1.5, "msg", n, t, "", 7) for n, t in [("alice", "a1"), ("bob", "b1"),
             ("alice", "a2"), ("alice", "a3")]]  # fmt: skip
    got = entry(stream.pack(batch), over='{"alice":1}')  # one of alice's lines was accepted
    assert [(r.offset, r.text) for r in got.records] == [(11, "a1"), (12, "b1")]
    rows = [r[1:] for r in batch]
    assert stream.refused(rows, '{"alice":1}') == {2, 3}


def test_what_is_not_an_entry_is_a_value_error() -> None:
    for fields in ([b"o", b"1"], [b"o", b"x", b"n", b"a", b"p", b"[]"], [b"o", b"1", b"n", b"a",
                   b"p", b'[[1, "msg", "a", "", 0, "not a list"]]']):  # fmt: skip
        try:
            stream.decode_fields("1-0", fields)
        except ValueError:
            continue
        raise AssertionError(f"decoded {fields!r}")
