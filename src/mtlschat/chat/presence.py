"""Who is online across every node of a relayed room (issue 13), from delivered records alone.

A name is online while at least one node has a session of it. Nodes publish ``join`` when a
name's first session on that node opens and ``leave`` when its last one there ends; every node
applies those records in the one global order, so every node sees the same transitions at the
same place in the log and announces the same joins and leaves.
"""

from __future__ import annotations

import bisect

from mtlschat.ca.names import name_key


class Presence:
    """Name -> the nodes that have it; the sorted list of names online."""

    def __init__(self) -> None:
        self.online: list[str] = []  # names online, sorted (the room's /who and welcome list)
        self._nodes: dict[str, set[str]] = {}  # name_key -> nodes with a session of it
        self._names: dict[str, str] = {}  # name_key -> the name as first seen

    def __len__(self) -> int:
        return len(self.online)

    def find(self, name: str) -> str | None:
        """The online name matching ``name`` case-insensitively, as it is shown; else None."""
        return self._names.get(name_key(name))

    def add(self, name: str, node: str) -> bool:
        """``node`` has ``name`` now; True if the name just came online."""
        key = name_key(name)
        nodes = self._nodes.get(key)
        if nodes is not None:
            nodes.add(node)
            return False
        self._nodes[key] = {node}
        self._names[key] = name
        bisect.insort(self.online, name)
        return True

    def remove(self, name: str, node: str) -> str | None:
        """``node`` no longer has ``name``; the name as shown if it just went offline."""
        key = name_key(name)
        nodes = self._nodes.get(key)
        if nodes is None:
            return None
        nodes.discard(node)
        if nodes:
            return None
        del self._nodes[key]
        shown = self._names.pop(key)
        del self.online[bisect.bisect_left(self.online, shown)]
        return shown

    def load(self, names_by_node: dict[str, set[str]]) -> None:
        """Replace everything with a snapshot (node -> names), in place."""
        self._nodes.clear()
        self._names.clear()
        for node, names in names_by_node.items():
            for name in names:
                key = name_key(name)
                self._nodes.setdefault(key, set()).add(node)
                self._names.setdefault(key, name)
        self.online[:] = sorted(self._names.values())

    def nodes_of(self, name: str) -> set[str]:
        """The nodes that have ``name`` (empty if offline)."""
        return set(self._nodes.get(name_key(name), ()))


__all__ = ["Presence"]
