"""The room's settings (each declared once, see :mod:`mtlschat.setting`) and its counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from mtlschat import __version__
from mtlschat.setting import Integer, ListOf, Number, Text, setting, settle


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """The room's limits. The server's configuration extends these (flags, environment, TOML)."""

    max_line: int = setting(
        2048,
        Integer(min=1),
        "Longest client line (terminator excluded); longer ones get a line_too_long error.",
        unit="bytes",
    )
    rate: float = setting(
        5.0,
        Number(positive=False, note="0 = no limit"),
        "Chat lines per second per user name (token bucket); every input line also draws from "
        "a budget 4x this. 0 disables both.",
        unit="lines/s",
    )
    burst: int = setting(
        20,
        Integer(min=1),
        "Token-bucket depth, so a short multi-line paste goes through.",
        unit="lines",
    )
    join_rate: float = setting(
        0.2,
        Number(positive=False, note="0 = no limit"),
        "Sessions a user name may open per second (token bucket), so a reconnect loop is "
        "refused; 0 disables the limit.",
        unit="joins/s",
    )
    join_burst: int = setting(
        5,
        Integer(min=1),
        "Join-bucket depth: sessions a user name may open at once before join-rate applies.",
        unit="joins",
    )
    sessions_per_name: int = setting(
        10,
        Integer(min=0, note="0 = no limit"),
        "Sessions one user name may have open at once (devices); 0 = no limit.",
        unit="sessions",
    )
    keepalive: float = setting(
        60.0, Number(), "Seconds of client silence before a ping.", unit="seconds"
    )
    idle_timeout: float = setting(
        180.0, Number(), "Seconds of client silence before bye (idle timeout).", unit="seconds"
    )
    # Join/leave lines go to everyone: N people joining cost N^2/2 lines.
    announce_limit: int = setting(
        500,
        Integer(min=0, note="0 = always announce"),
        "Above this many people online, joins and leaves are no longer announced; 0 = always.",
    )
    operators: tuple[str, ...] = setting(
        (),
        ListOf(Text()),
        "Certificate names allowed to /kick, /ban, /mute and set the /topic (reloaded live).",
        unit="names",
    )
    motd: str = setting(
        "", Text(), "Message of the day, shown to each member who joins (reloaded live)."
    )
    welcome_names: int = setting(
        100,
        Integer(min=0),
        "Names listed in a welcome (plus the count); /who lists everyone.",
        public=False,
    )
    history_join: int = setting(
        20,
        Integer(min=0),
        "History lines replayed to a member who joins (when history is on); 0 = none.",
        unit="lines",
    )
    history_max: int = setting(
        1000,
        Integer(min=1),
        "Most lines one /history N, /search or reconnect (/resume) replays.",
        unit="lines",
    )
    server_version: str = f"mtlschat {__version__}"

    def __post_init__(self) -> None:
        settle(self)


@dataclass(slots=True)
class RoomCounters:
    """Cumulative counts the room bumps as it works; cheap enough to leave on always."""

    sessions_opened: int = 0
    sessions_closed: int = 0
    messages: int = 0  # accepted msg / action / dm
    deliveries: int = 0  # server -> client lines handed out by flush()
    errors: int = 0  # error lines sent (bad commands, framing, rate limit)
    rate_limited: int = 0  # lines dropped by the rate limit
    refused: dict[str, int] = field(default_factory=dict)  # sessions refused, by Refusal.code
    input_dropped: int = 0  # input lines dropped unread: over the name's input budget
    bad_lines: dict[str, int] = field(default_factory=dict)  # lines refused, by error code
