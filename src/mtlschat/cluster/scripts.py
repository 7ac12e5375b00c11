"""The Lua scripts that do every write of a node, each atomic (Redis runs a script alone), each
one EVALSHA (EVAL again on NOSCRIPT, after a Redis restart or SCRIPT FLUSH).

- :data:`PUBLISH`: one round of a node's records. Checks the epoch (a node that missed a reset
  must not append to the new history), skips a batch already applied (``seen``: a batch re-sent
  after a lost connection is not duplicated), takes each chat line's token from the sender's
  bucket shared by all nodes (refused lines come back by index), INCRs the offset of chat lines
  only, XADDs every record (``MAXLEN ~``), keeps ``members:NODE`` from join/leave records and
  the ``moderation`` / ``crl`` hashes from mod records.
- :data:`HEARTBEAT`: a node's "still here"; tells it when it was reaped meanwhile.
- :data:`REAP`: nodes silent for longer than the timeout: a leave per name, once (atomic).
- :data:`BYE`: a node stopping: the same for itself, at once.
- :data:`HELLO`: at (re)connect: the epoch (created if missing), the node's members written
  (join/leave records for what changed), and the state to start from: the stream's last id,
  the last offset, the presence snapshot, the moderation state and the newest CRL.

Times come from Redis's ``TIME`` (one clock for every node's heartbeat). Redis 7 replicates a
script's effects, not the script, so a script may read ``TIME`` before writing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from mtlschat.cluster.keys import RoomKeys

CHAT_KINDS = ("msg", "action", "dm")  # the kinds that take an offset (dense history)
RECORD_ARGS = 7  # ARGV per record in PUBLISH: kind ts sender text to origin key
NODE_TIMEOUT = 10.0  # seconds without a heartbeat before a node is reaped (see engine.py)


@dataclass(frozen=True)
class Script:
    """A Lua script and its SHA1 (what EVALSHA names it by)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

_XADD = """
local function xadd(log, maxlen, fields)
  if maxlen > 0 then
    return redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  end
  return redis.call('XADD', log, '*', unpack(fields))
end
"""

# KEYS: epoch offset log seen members:NODE rate moderation crl
# ARGV: epoch node batch maxlen rate burst, then RECORD_ARGS per record
# -> {"ok", {refused indexes, 0-based}, last offset} | {"epoch", current or ""} | {"dup"}
PUBLISH = Script(
    "publish",
    _NOW
    + _XADD
    + """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {'epoch', current or ''}
end
local node, batch = ARGV[2], tonumber(ARGV[3])
local seen = tonumber(redis.call('HGET', KEYS[4], node) or '0')
if batch <= seen then
  return {'dup'}
end
redis.call('HSET', KEYS[4], node, batch)
local maxlen, rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local chat = {msg = true, action = true, dm = true}
local buckets = {}
local refused = {}
local offset = 0
local i = 7
local index = 0
while i <= #ARGV do
  local kind, ts, sender, text, to, origin, key =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local take = true
  if chat[kind] and rate > 0 then
    local b = buckets[key]
    if not b then
      local raw = redis.call('HGET', KEYS[6], key)
      if raw then
        local tokens, stamp = string.match(raw, '^(%S+) (%S+)$')
        b = {tonumber(tokens), tonumber(stamp)}
      else
        b = {burst, now}
      end
      b[1] = math.min(burst, b[1] + math.max(0, now - b[2]) * rate)
      b[2] = now
      buckets[key] = b
    end
    if b[1] >= 1 then
      b[1] = b[1] - 1
    else
      take = false
      refused[#refused + 1] = index
    end
  end
  if take then
    local o = 0
    if chat[kind] then
      o = redis.call('INCR', KEYS[2])
      offset = o
    elseif kind == 'join' then
      redis.call('SADD', KEYS[5], sender)
    elseif kind == 'leave' then
      redis.call('SREM', KEYS[5], sender)
    elseif kind == 'mod' then
      local ok, mod = pcall(cjson.decode, text)
      if ok and type(mod) == 'table' then
        local op = mod['op']
        if op == 'ban' or op == 'mute' then
          redis.call('HSET', KEYS[7], op .. ':' .. key, text)
        elseif op == 'unban' then
          redis.call('HDEL', KEYS[7], 'ban:' .. key)
        elseif op == 'unmute' then
          redis.call('HDEL', KEYS[7], 'mute:' .. key)
        elseif op == 'topic' then
          redis.call('HSET', KEYS[7], 'topic', text)
        elseif op == 'crl' then
          local have = tonumber(redis.call('HGET', KEYS[8], 'number') or '-1')
          local number = tonumber(mod['number'])
          if number and number > have then
            redis.call('HSET', KEYS[8], 'number', number, 'pem', mod['pem'])
          end
        end
      end
    end
    xadd(KEYS[3], maxlen, {'o', o, 't', ts, 'k', kind, 's', sender, 'x', text, 'r', to,
                           'g', origin, 'n', node})
  end
  i = i + 7
  index = index + 1
end
for k, b in pairs(buckets) do
  redis.call('HSET', KEYS[6], k, string.format('%.6f %.6f', b[1], b[2]))
end
if offset == 0 then
  offset = tonumber(redis.call('GET', KEYS[2]) or '0')
end
return {'ok', refused, offset}
""",
)

# KEYS: nodes; ARGV: node -> 1 (heartbeat noted) | 0 (the node was reaped or never said hello)
HEARTBEAT = Script(
    "heartbeat",
    _NOW
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
return 1
""",
)

# KEYS: nodes log seen; ARGV: prefix timeout maxlen -> the nodes reaped
REAP = Script(
    "reap",
    _NOW
    + _XADD
    + """
local prefix, timeout, maxlen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - timeout))
for _, node in ipairs(dead) do
  local members = prefix .. 'members:' .. node
  for _, name in ipairs(redis.call('SMEMBERS', members)) do
    xadd(KEYS[2], maxlen, {'o', 0, 't', now, 'k', 'leave', 's', name, 'x', 'node lost',
                           'r', '', 'g', 0, 'n', node})
  end
  redis.call('DEL', members)
  redis.call('ZREM', KEYS[1], node)
  redis.call('HDEL', KEYS[3], node)
end
return dead
""",
)

# KEYS: nodes log seen; ARGV: prefix node maxlen reason -> names announced as left
BYE = Script(
    "bye",
    _NOW
    + _XADD
    + """
local prefix, node, maxlen = ARGV[1], ARGV[2], tonumber(ARGV[3])
local members = prefix .. 'members:' .. node
local names = redis.call('SMEMBERS', members)
for _, name in ipairs(names) do
  xadd(KEYS[2], maxlen, {'o', 0, 't', now, 'k', 'leave', 's', name, 'x', ARGV[4],
                         'r', '', 'g', 0, 'n', node})
end
redis.call('DEL', members)
redis.call('ZREM', KEYS[1], node)
redis.call('HDEL', KEYS[3], node)
return names
""",
)

# KEYS: epoch offset log nodes moderation crl
# ARGV: prefix node candidate-epoch maxlen ts, then the node's member names
# -> {epoch, last stream id, last offset, {node, {names}, node, {names}, ...},
#     {moderation field, value, ...}, crl number or "", crl pem or ""}
HELLO = Script(
    "hello",
    _NOW
    + _XADD
    + """
local prefix, node, maxlen, ts = ARGV[1], ARGV[2], tonumber(ARGV[4]), ARGV[5]
redis.call('SET', KEYS[1], ARGV[3], 'NX')
local epoch = redis.call('GET', KEYS[1])
redis.call('ZADD', KEYS[4], now, node)
local members = prefix .. 'members:' .. node
local had = {}
for _, name in ipairs(redis.call('SMEMBERS', members)) do
  had[name] = true
end
local has = {}
for i = 6, #ARGV do
  local name = ARGV[i]
  has[name] = true
  if not had[name] then
    redis.call('SADD', members, name)
    xadd(KEYS[3], maxlen, {'o', 0, 't', ts, 'k', 'join', 's', name, 'x', '', 'r', '',
                           'g', 0, 'n', node})
  end
end
for name, _ in pairs(had) do
  if not has[name] then
    redis.call('SREM', members, name)
    xadd(KEYS[3], maxlen, {'o', 0, 't', ts, 'k', 'leave', 's', name, 'x', 'left',
                           'r', '', 'g', 0, 'n', node})
  end
end
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then
  id = last[1][1]
end
local snapshot = {}
for _, n in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  snapshot[#snapshot + 1] = n
  snapshot[#snapshot + 1] = redis.call('SMEMBERS', prefix .. 'members:' .. n)
end
local crl = redis.call('HMGET', KEYS[6], 'number', 'pem')
return {epoch, id, tonumber(redis.call('GET', KEYS[2]) or '0'), snapshot,
        redis.call('HGETALL', KEYS[5]), crl[1] or '', crl[2] or ''}
""",
)

SCRIPTS = (PUBLISH, HEARTBEAT, REAP, BYE, HELLO)


# ---- the calls: (script, keys, args), for EVALSHA and EVAL alike -----------------------------

Call = tuple[Script, list[str], list[str | int | float]]


def publish_call(
    keys: RoomKeys,
    *,
    epoch: str,
    node: str,
    batch: int,
    maxlen: int,
    rate: float,
    burst: int,
    records: Sequence[tuple[str, float, str, str, str, int, str]],
) -> Call:
    """One round of a node's records: each ``(kind, ts, sender, text, to, origin, key)``, where
    ``key`` is the sender's name key for a chat line (its shared bucket) or the target's for a
    mod record (its moderation entry)."""
    args: list[str | int | float] = [epoch, node, batch, maxlen, rate, burst]
    for kind, ts, sender, text, to, origin, key in records:
        args += [kind, repr(ts), sender, text, to, origin, key]
    ks = [keys.epoch, keys.offset, keys.log, keys.seen, keys.members(node), keys.rate]
    return PUBLISH, [*ks, keys.moderation, keys.crl], args


def heartbeat_call(keys: RoomKeys, node: str) -> Call:
    """A node's heartbeat."""
    return HEARTBEAT, [keys.nodes], [node]


def reap_call(keys: RoomKeys, *, maxlen: int, timeout: float = NODE_TIMEOUT) -> Call:
    """Reap the nodes silent for longer than ``timeout`` seconds."""
    return REAP, [keys.nodes, keys.log, keys.seen], [keys.prefix, timeout, maxlen]


def bye_call(keys: RoomKeys, *, node: str, maxlen: int, reason: str) -> Call:
    """A node stopping: its members announced as left at once (not 15 s later by a reap)."""
    return BYE, [keys.nodes, keys.log, keys.seen], [keys.prefix, node, maxlen, reason]


def hello_call(
    keys: RoomKeys, *, node: str, epoch: str, maxlen: int, ts: float, names: Sequence[str]
) -> Call:
    """A node's (re)connect: ``epoch`` is used if Redis has none; ``names`` are its members."""
    ks = [keys.epoch, keys.offset, keys.log, keys.nodes, keys.moderation, keys.crl]
    return HELLO, ks, [keys.prefix, node, epoch, maxlen, repr(ts), *names]


def evalsha(call: Call) -> list[str | int | float]:
    """The EVALSHA command for ``call`` (send :func:`eval_` instead after a NOSCRIPT error)."""
    script, ks, args = call
    return ["EVALSHA", script.sha, len(ks), *ks, *args]


def eval_(call: Call) -> list[str | int | float]:
    """The EVAL command for ``call``: the source itself (Redis caches it for EVALSHA)."""
    script, ks, args = call
    return ["EVAL", script.source, len(ks), *ks, *args]
