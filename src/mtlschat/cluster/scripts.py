"""The Lua scripts that do every write of a node, each atomic (Redis runs a script alone), each
one EVALSHA (EVAL again on NOSCRIPT, after a Redis restart or SCRIPT FLUSH).

- :data:`PUBLISH`: one round of a node's records, as ONE log entry. Checks the epoch (a node
  that missed a reset must not append to the new history), skips a batch already applied
  (``seen``: a batch re-sent after a lost connection is not duplicated; its refusals are
  answered again from ``refused:NODE``), takes each name's lines from its bucket shared by all
  nodes (what was refused comes back as lines accepted per name, and the entry says so too),
  numbers the chat lines (INCRBY: the entry carries the offset before them), trims the log to
  ``maxlen`` chat lines, keeps ``members:NODE`` from join/leave records and the
  ``moderation`` / ``crl`` hashes from mod records.
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
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from mtlschat.ca.names import name_key
from mtlschat.cluster import stream
from mtlschat.cluster.keys import RoomKeys
from mtlschat.history.store import CHAT_KINDS, JOIN, LEAVE, MOD, Record

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
# node's batch number (0: written by a script), ``p`` the records as a JSON array of groups
# ``[ts, kind, sender, to, origin, [text, ...]]``, and ``z`` (if the rate limit refused lines)
# JSON {name key: lines of it accepted}. The same entry is published on ``LOG:push`` (see
# stream.decode_push): caught-up nodes get it pushed.
_ENTRY = """
local function entry(log, base, node, batch, payload, refused)
  local fields = {'o', base, 'n', node, 'b', batch, 'p', payload}
  if refused ~= '' then
    fields[#fields + 1] = 'z'
    fields[#fields + 1] = refused
  end
  local id = redis.call('XADD', log, '*', unpack(fields))
  redis.call('PUBLISH', log .. ':push', string.format('%s %d %d %d %d\\n', id, base, batch,
    #node, #refused) .. node .. refused .. payload)
  return id
end
local function groups_entry(log, offset, node, groups)
  if #groups > 0 then
    entry(log, tonumber(redis.call('GET', offset) or '0'), node, 0, cjson.encode(groups), '')
  end
end
"""

# KEYS: epoch offset log seen members:NODE rate moderation crl index refused:NODE
# ARGV: epoch node batch maxlen rate burst payload nkeys, then nkeys pairs (key, chat lines of
#   that name key in the batch), then one triple per other record (kind, key, extra): key the
#   target's name key of a mod record, extra the name of a join/leave or the JSON of a mod
# -> {"ok", over, last offset} | {"epoch", current or ""} | {"dup", over}
#   over: "" when no line was refused, else JSON {name key: lines of it accepted}: the rest of
#   that name's lines in the batch were refused by the rate limit (a bucket is drained in order)
# The whole batch is ONE log entry (its chat lines numbered base+1, base+2, ... by readers), and
# Redis's work is per name and per batch, not per line. ``maxlen`` > 0 keeps that many chat
# lines (whole entries: ``index`` maps each entry to its last offset).
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
local nkeys = tonumber(ARGV[8])
local lines = 0
local over = {}
local refused = false
local i = 9
for _ = 1, nkeys do
  local key, n = ARGV[i], tonumber(ARGV[i + 1])
  local ok = n
  if rate > 0 then
    local raw = redis.call('HGET', KEYS[6], key)
    local tokens, stamp = burst, now
    if raw then
      local t, s = string.match(raw, '^(%S+) (%S+)$')
      tokens, stamp = tonumber(t), tonumber(s)
    end
    tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
    ok = math.min(n, math.floor(tokens))
    redis.call('HSET', KEYS[6], key, string.format('%.6f %.6f', tokens - ok, now))
  end
  if ok < n then
    over[key] = ok
    refused = true
  end
  lines = lines + ok
  i = i + 2
end
local others = 0
while i <= #ARGV do
  local kind, key, extra = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  others = others + 1
  if kind == 'join' then
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
  i = i + 3
end
local z = ''
if refused then  -- kept for a re-send of this batch whose reply was lost
  z = cjson.encode(over)
  redis.call('HSET', KEYS[10], ARGV[3], z)
  redis.call('EXPIRE', KEYS[10], """
    + str(REFUSALS_TTL)
    + """)
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if lines + others > 0 then
  local id = entry(KEYS[3], last, node, batch, ARGV[7], z)  -- (last: the offset before it)
  if lines > 0 then
    last = redis.call('INCRBY', KEYS[2], lines)
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
  end
end
return {'ok', z, last}
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
  local groups = {}
  for _, name in ipairs(redis.call('SMEMBERS', members)) do
    groups[#groups + 1] = {now, 'leave', name, '', 0, {'node lost'}}
  end
  groups_entry(KEYS[2], KEYS[4], node, groups)
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
local groups = {}
for _, name in ipairs(names) do
  groups[#groups + 1] = {now, 'leave', name, '', 0, {ARGV[3]}}
end
groups_entry(KEYS[2], KEYS[4], node, groups)
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
local groups = {}
for i = 5, #ARGV do
  local name = ARGV[i]
  has[name] = true
  if not had[name] then
    redis.call('SADD', members, name)
    groups[#groups + 1] = {ts, 'join', name, '', 0, {''}}
  end
end
for name, _ in pairs(had) do
  if not has[name] then
    redis.call('SREM', members, name)
    groups[#groups + 1] = {ts, 'leave', name, '', 0, {'left'}}
  end
end
groups_entry(KEYS[3], KEYS[2], node, groups)
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
    script reads only how many chat lines each name said (its shared bucket) and the other
    records (join/leave keep ``members:NODE``; mod records the moderation state)."""
    counts: dict[str, int] = {}
    others: list[str] = []
    runs = stream.run_ends(records)
    start = 0
    for end in runs:  # (a run shares its kind and sender: a burst's lines are counted at once)
        first = records[start]
        kind = first.kind
        if kind in CHAT_KINDS:
            key = stream.sender_key(first.sender)
            counts[key] = counts.get(key, 0) + end - start
        else:
            for r in records[start:end]:
                if kind in (JOIN, LEAVE):
                    others += (kind, "", r.sender)
                elif kind == MOD:
                    others += (kind, _mod_key(r.text), r.text)
                else:
                    others += (kind, "", "")
        start = end
    payload = stream.pack(records, runs)
    args: list[str | int | float] = [epoch, node, batch, maxlen, rate, burst, payload]
    args.append(len(counts))
    for key, n in counts.items():
        args += (key, n)
    args += others
    ks = [keys.epoch, keys.offset, keys.log, keys.seen, keys.members(node), keys.rate]
    return PUBLISH, [*ks, keys.moderation, keys.crl, keys.index, keys.refused(node)], args


def _mod_key(text: str) -> str:
    try:
        op = json.loads(text)
        return name_key(str(op.get("name", ""))) if isinstance(op, dict) else ""
    except ValueError:
        return ""


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
