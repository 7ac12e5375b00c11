"""Read the room's log in a real Redis as a node would (redis-py reads, stream.py decodes)."""

from __future__ import annotations

from typing import Any

import redis

from mtlschat.cluster import stream
from mtlschat.cluster.keys import RoomKeys
from mtlschat.history.store import Record


def log_entries(r: redis.Redis, keys: RoomKeys | None = None) -> list[stream.Entry]:
    """Every entry of the log, oldest first, decoded."""
    out = []
    for eid, fields in r.xrange((keys or RoomKeys()).log):
        flat: list[Any] = [x for kv in fields.items() for x in kv]
        out.append(stream.decode_fields(eid.decode(), flat))
    return out


def log_records(r: redis.Redis, keys: RoomKeys | None = None) -> list[Record]:
    """Every record of the log, in order."""
    return [rec for e in log_entries(r, keys) for rec in e.records]
