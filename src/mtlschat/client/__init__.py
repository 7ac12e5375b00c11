"""``mtlschat client``: join a room with a certificate bundle.

- :mod:`.errors` -- the exit codes (one per failure) and :class:`~.errors.ClientError`
- :mod:`.protocol` -- sans-I/O: server JSON lines -> events, room state, local echo, cleaning
- :mod:`.render` -- sans-I/O: event -> plain line (pipe mode) or styled fragments (terminal UI)
- :mod:`.tls` -- the SSLContext from a bundle, and what each TLS failure means
- :mod:`.backoff` -- reconnect delays
- :mod:`.connection` -- :class:`~.connection.Link`: one asyncio TLS connection, reconnecting
- :mod:`.pipe`, :mod:`.ui` -- the two front ends; :mod:`.app` picks one
"""
