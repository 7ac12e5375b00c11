"""The Lua scripts that do every write of a node, each atomic (Redis runs a script alone), each
one EVALSHA (EVAL again on NOSCRIPT, after a Redis restart or SCRIPT FLUSH).

- :data:`PUBLISH`: one round of a node's records, as ONE log entry. Checks the epoch (a node
  that missed a reset must not append to the new history), skips a batch already applied
  (``seen``: a batch re-sent after a lost connection is not duplicated; its refusals are
  answered again from ``refused:NODE``), takes each chat line's token from the sender's bucket
  shared by all nodes (refused lines come back by index, and the entry names them), numbers the
  chat lines (INCRBY: the entry carries the offset before them), trims the log to ``maxlen``
  chat lines, keeps ``members:NODE`` from join/leave records and the ``moderation`` / ``crl``
  hashes from mod records.
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

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from mtlschat.ca.names import name_key
from mtlschat.cluster import stream
from mtlschat.cluster.keys import RoomKeys
from mtlschat.history.store import CHAT_KINDS, JOIN, LEAVE, MOD, Record

RECORD_ARGS = 3  # ARGV per record in PUBLISH: kind key extra (the rest is in the payload)
NODE_TIMEOUT = 10.0  # seconds without a heartbeat before a node is reaped (see engine.py)
REFUSALS_TTL = 3600  # seconds a batch's refusals are kept for a re-send of it (see PUBLISH)


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

# One log entry (see stream.py): ``o`` the last offset before it, ``n`` the node, ``b`` the
# node's batch number (0: written by a script), ``p`` the records as a JSON array of rows
# ``[ts, kind, sender, text, to, origin]``, and ``z`` the indexes of rows refused (if any).
_ENTRY = """
local function entry(log, offset, node, batch, payload, refused)
  local base = tonumber(redis.call('GET', offset) or '0')
  local fields = {'o', base, 'n', node, 'b', batch, 'p', payload}
  if refused ~= '' then
    fields[#fields + 1] = 'z'
    fields[#fields + 1] = refused
  end
  return redis.call('XADD', log, '*', unpack(fields))
end
local function rows_entry(log, offset, node, rows)
  if #rows > 0 then
    entry(log, offset, node, 0, cjson.encode(rows), '')
  end
end
"""

# KEYS: epoch offset log seen members:NODE rate moderation crl index refused:NODE
# ARGV: epoch node batch maxlen rate burst payload, then RECORD_ARGS per record:
#   kind, key (the sender's name key for a chat line: its bucket; the target's for a mod
#   record), extra (the name for join/leave, the JSON for mod, else "")
# -> {"ok", {refused indexes, 0-based}, last offset} | {"epoch", current or ""}
#    | {"dup", refused indexes as "i j k" or ""}
# The whole batch is ONE log entry (its chat lines numbered base+1, base+2, ... by readers):
# Redis's work per line is a few table operations, not an XADD. ``maxlen`` > 0 keeps that many
# chat lines (by offset, whole entries: ``index`` maps each entry to its last offset).
PUBLISH = Script(
    "publish",
    _NOW
    + _ENTRY
    + """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {'epoch', current or ''}
end
local node, batch = ARGV[2], tonumber(ARGV[3])
local seen = tonumber(redis.call('HGET', KEYS[4], node) or '0')
if batch <= seen then
  return {'dup', redis.call('HGET', KEYS[10], ARGV[3]) or ''}
end
redis.call('HSET', KEYS[4], node, batch)
local maxlen, rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local chat = {msg = true, action = true, dm = true}
local buckets = {}
local refused = {}
local lines = 0
local taken = 0
local index = 0
for i = 8, #ARGV, 3 do
  local kind, key, extra = ARGV[i], ARGV[i + 1], ARGV[i + 2]
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
    taken = taken + 1
    if chat[kind] then
      lines = lines + 1
    elseif kind == 'join' then
      redis.call('SADD', KEYS[5], extra)
    elseif kind == 'leave' then
      redis.call('SREM', KEYS[5], extra)
    elseif kind == 'mod' then
      local ok, mod = pcall(cjson.decode, extra)
      if ok and type(mod) == 'table' then
        local op = mod['op']
        if op == 'ban' or op == 'mute' then
          redis.call('HSET', KEYS[7], op .. ':' .. key, extra)
        elseif op == 'unban' then
          redis.call('HDEL', KEYS[7], 'ban:' .. key)
        elseif op == 'unmute' then
          redis.call('HDEL', KEYS[7], 'mute:' .. key)
        elseif op == 'topic' then
          redis.call('HSET', KEYS[7], 'topic', extra)
        elseif op == 'crl' then
          local have = tonumber(redis.call('HGET', KEYS[8], 'number') or '-1')
          local number = tonumber(mod['number'])
          if number and number > have then
            redis.call('HSET', KEYS[8], 'number', number, 'pem', mod['pem'])
          end
        end
      end
    end
  end
  index = index + 1
end
for k, b in pairs(buckets) do
  redis.call('HSET', KEYS[6], k, string.format('%.6f %.6f', b[1], b[2]))
end
local z = table.concat(refused, ' ')
if z ~= '' then  -- kept for a re-send of this batch whose reply was lost
  redis.call('HSET', KEYS[10], ARGV[3], z)
  redis.call('EXPIRE', KEYS[10], """
    + str(REFUSALS_TTL)
    + """)
end
if taken > 0 then
  local id = entry(KEYS[3], KEYS[2], node, batch, ARGV[7], z)
  if lines > 0 then
    local last = redis.call('INCRBY', KEYS[2], lines)
    if maxlen > 0 then
      redis.call('ZADD', KEYS[9], last, id)
      local floor = last - maxlen  -- lines at or below it are past the retention
      if floor > 0 then
        local keep = redis.call('ZRANGEBYSCORE', KEYS[9], '(' .. floor, '+inf', 'LIMIT', 0, 1)
        if #keep > 0 then
          redis.call('XTRIM', KEYS[3], 'MINID', keep[1])
        end
        redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', floor)
      end
    end
    return {'ok', refused, last}
  end
end
return {'ok', refused, tonumber(redis.call('GET', KEYS[2]) or '0')}
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

# KEYS: nodes log seen offset; ARGV: prefix timeout -> the nodes reaped
REAP = Script(
    "reap",
    _NOW
    + _ENTRY
    + """
local prefix, timeout = ARGV[1], tonumber(ARGV[2])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - timeout))
for _, node in ipairs(dead) do
  local members = prefix .. 'members:' .. node
  local rows = {}
  for _, name in ipairs(redis.call('SMEMBERS', members)) do
    rows[#rows + 1] = {now, 'leave', name, 'node lost', '', 0}
  end
  rows_entry(KEYS[2], KEYS[4], node, rows)
  redis.call('DEL', members, prefix .. 'refused:' .. node)
  redis.call('ZREM', KEYS[1], node)
  redis.call('HDEL', KEYS[3], node)
end
return dead
""",
)

# KEYS: nodes log seen offset; ARGV: prefix node reason -> names announced as left
BYE = Script(
    "bye",
    _NOW
    + _ENTRY
    + """
local prefix, node = ARGV[1], ARGV[2]
local members = prefix .. 'members:' .. node
local names = redis.call('SMEMBERS', members)
local rows = {}
for _, name in ipairs(names) do
  rows[#rows + 1] = {now, 'leave', name, ARGV[3], '', 0}
end
rows_entry(KEYS[2], KEYS[4], node, rows)
redis.call('DEL', members, prefix .. 'refused:' .. node)
redis.call('ZREM', KEYS[1], node)
redis.call('HDEL', KEYS[3], node)
return names
""",
)

# KEYS: epoch offset log nodes moderation crl
# ARGV: prefix node candidate-epoch ts, then the node's member names
# -> {epoch, last stream id, last offset, {node, {names}, node, {names}, ...},
#     {moderation field, value, ...}, crl number or "", crl pem or ""}
HELLO = Script(
    "hello",
    _NOW
    + _ENTRY
    + """
local prefix, node, ts = ARGV[1], ARGV[2], tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[3], 'NX')
local epoch = redis.call('GET', KEYS[1])
redis.call('ZADD', KEYS[4], now, node)
local members = prefix .. 'members:' .. node
local had = {}
for _, name in ipairs(redis.call('SMEMBERS', members)) do
  had[name] = true
end
local has = {}
local rows = {}
for i = 5, #ARGV do
  local name = ARGV[i]
  has[name] = true
  if not had[name] then
    redis.call('SADD', members, name)
    rows[#rows + 1] = {ts, 'join', name, '', '', 0}
  end
end
for name, _ in pairs(had) do
  if not has[name] then
    redis.call('SREM', members, name)
    rows[#rows + 1] = {ts, 'leave', name, 'left', '', 0}
  end
end
rows_entry(KEYS[3], KEYS[2], node, rows)
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
    records: Sequence[Record],
) -> Call:
    """One round of a node's records, as one log entry (``maxlen``: chat lines the log keeps;
    0: all). The records go packed in one argument (:func:`mtlschat.cluster.stream.pack`); the
    script reads only :func:`meta` of each."""
    args: list[str | int | float] = [epoch, node, batch, maxlen, rate, burst, stream.pack(records)]
    for r in records:
        args += meta(r)
    ks = [keys.epoch, keys.offset, keys.log, keys.seen, keys.members(node), keys.rate]
    return PUBLISH, [*ks, keys.moderation, keys.crl, keys.index, keys.refused(node)], args


@functools.lru_cache(maxsize=4096)
def _key(name: str) -> str:
    return name_key(name)  # (a burst says one name thousands of times)


def meta(r: Record) -> tuple[str, str, str]:
    """What the publish script reads of a record: ``(kind, key, extra)``. ``key`` is the
    sender's name key for a chat line (its shared bucket) or the target's for a mod record (its
    moderation entry); ``extra`` the name of a join or leave, the JSON of a mod record."""
    kind = r.kind
    if kind in CHAT_KINDS:
        return (kind, _key(r.sender), "")
    if kind in (JOIN, LEAVE):
        return (kind, "", r.sender)
    if kind == MOD:
        try:
            op = json.loads(r.text)
            key = name_key(str(op.get("name", ""))) if isinstance(op, dict) else ""
        except ValueError:
            key = ""
        return (kind, key, r.text)
    return (kind, "", "")


def heartbeat_call(keys: RoomKeys, node: str) -> Call:
    """A node's heartbeat."""
    return HEARTBEAT, [keys.nodes], [node]


def reap_call(keys: RoomKeys, *, timeout: float = NODE_TIMEOUT) -> Call:
    """Reap the nodes silent for longer than ``timeout`` seconds."""
    return REAP, [keys.nodes, keys.log, keys.seen, keys.offset], [keys.prefix, timeout]


def bye_call(keys: RoomKeys, *, node: str, reason: str) -> Call:
    """A node stopping: its members announced as left at once (not 15 s later by a reap)."""
    return BYE, [keys.nodes, keys.log, keys.seen, keys.offset], [keys.prefix, node, reason]


def hello_call(keys: RoomKeys, *, node: str, epoch: str, ts: float, names: Sequence[str]) -> Call:
    """A node's (re)connect: ``epoch`` is used if Redis has none; ``names`` are its members."""
    ks = [keys.epoch, keys.offset, keys.log, keys.nodes, keys.moderation, keys.crl]
    return HELLO, ks, [keys.prefix, node, epoch, repr(ts), *names]


def evalsha(call: Call) -> list[str | int | float]:
    """The EVALSHA command for ``call`` (send :func:`eval_` instead after a NOSCRIPT error)."""
    script, ks, args = call
    return ["EVALSHA", script.sha, len(ks), *ks, *args]


def eval_(call: Call) -> list[str | int | float]:
    """The EVAL command for ``call``: the source itself (Redis caches it for EVALSHA)."""
    script, ks, args = call
    return ["EVAL", script.source, len(ks), *ks, *args]
