"""Chat history: the store interface (:mod:`.store`), the embedded SQLite store (:mod:`.sqlite`)
and the journal the room writes through (:mod:`.journal`).

Nothing here touches a socket: the room imports the interface without importing ``mtlschat.net``.
"""
