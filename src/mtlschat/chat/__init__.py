"""mtlschat.chat: the wire protocol and the chat room, sans-I/O (no sockets, no ssl, no threads).

The event loop (``mtlschat.net``) uses this package; nothing here imports ``mtlschat.net``
(``tests/test_import_graph.py`` checks it).

- ``room``: :class:`~mtlschat.chat.room.Room` and :class:`~mtlschat.chat.room.Session`, the
  contract the event loop drives (``docs/architecture.md``)
- ``framing``: ``LineDecoder``, bytes in any split -> complete lines or framing errors
- ``commands``: the command table, one entry per ``/command``
- ``wire``: every server -> client message and its text / JSON encoding, ``Mode``, ALPN names
- ``settings``: ``RoomSettings`` (limits) and ``RoomCounters`` (cumulative counts)
"""
