"""mtlschat.chat: the chat room, sans-I/O (no sockets, no ssl, no threads).

- ``room``: :class:`~mtlschat.chat.room.Room` and :class:`~mtlschat.chat.room.Session`, the
  contract the event loop drives (``docs/architecture.md``)
- ``commands``: the command table, one entry per ``/command``
- ``wire``: every server -> client message and its text / JSON encoding, ``Mode``, ALPN names
- ``settings``: ``RoomSettings`` (limits) and ``RoomCounters`` (for metrics)
"""
