"""The status store's transitions as Lua scripts: each runs atomically inside Redis.

Time is Redis' own clock (TIME), so leases and due times mean the same to every worker.
Keys are derived from the namespace (ARGV[1]); this targets a single Redis, not Cluster.
"""

PRELUDE = r"""
local ns = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local DUE = ns .. ':due'
local TERMINAL = {placed=true, failed=true, unknown=true, cancelled=true, rejected=true}
local function rkey(id) return ns .. ':req:' .. id end
local function hkey(id) return ns .. ':hist:' .. id end
local function note(id, event, detail)
  local r = redis.call('HMGET', rkey(id), 'state', 'attempts')
  local entry = {at = now, event = event, state = r[1], attempt = tonumber(r[2]) or 0}
  if detail and detail ~= '' then entry['detail'] = detail end
  redis.call('RPUSH', hkey(id), cjson.encode(entry))
end
local function move(id, old, new)
  if old then redis.call('ZREM', ns .. ':state:' .. old, id) end
  redis.call('ZADD', ns .. ':state:' .. new, now, id)
  redis.call('HSET', rkey(id), 'state', new, 'updated_at', now)
end
local function settle(id, ttl)
  redis.call('ZREM', DUE, id)
  redis.call('HDEL', rkey(id), 'lease_until', 'next_attempt_at')
  redis.call('EXPIRE', rkey(id), ttl)
  redis.call('EXPIRE', hkey(id), ttl)
end
"""

# ARGV: ns, id, request, digest, idempotency_key, idem_ttl, state, queue, last_error, source, ttl,
#       redeliver_after
REGISTER = (
    PRELUDE
    + r"""
local id, request, digest, key = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local idem_ttl, state, queue, last_error = tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9]
local source, ttl, redeliver_after = ARGV[10], tonumber(ARGV[11]), tonumber(ARGV[12])
if redis.call('EXISTS', rkey(id)) == 1 then return {'exists', id} end
if key ~= '' then
  local ikey = ns .. ':idem:' .. key
  local first = redis.call('GET', ikey)
  if first and redis.call('EXISTS', rkey(first)) == 1 then
    if redis.call('HGET', rkey(first), 'digest') ~= digest then return {'conflict', first} end
    if source == 'message' then
      redis.call('SET', ns .. ':alias:' .. id, first, 'EX', idem_ttl)
      note(first, 'duplicate ignored', 'message ' .. id .. ' carried the same idempotency key')
    end
    return {'duplicate', first}
  end
  redis.call('SET', ikey, id, 'EX', idem_ttl)
end
redis.call('HSET', rkey(id), 'request', request, 'digest', digest, 'idempotency_key', key,
  'attempts', 0, 'created_at', now, 'queue', queue, 'source', source, 'republished', 0)
if last_error ~= '' then redis.call('HSET', rkey(id), 'last_error', last_error) end
move(id, nil, state)
redis.call('ZADD', ns .. ':all', now, id)
if TERMINAL[state] then
  note(id, state, 'from ' .. source)
  settle(id, ttl)
else
  redis.call('HSET', rkey(id), 'next_attempt_at', now)
  -- If no worker claims it by then (message lost, worker died holding it), the sweeper republishes.
  redis.call('ZADD', DUE, now + redeliver_after, id)
  note(id, 'enqueued', 'from ' .. source)
end
return {'created', id}
"""
)

# ARGV: ns, id, token, lease_s, mode ('deliver' | 'sweep'), ttl, max_attempts, redeliver_after,
#       unknown_error, spread_s. Returns {outcome, state, attempts, request JSON when claimed}.
# While the API has asked every client to pause (a 429 or 503 with Retry-After), a due request
# is not claimed: it waits in 'scheduled' until the pause ends (plus spread_s), no attempt spent.
CLAIM = (
    PRELUDE
    + r"""
local id, token, lease, mode = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local ttl, max_attempts, redeliver_after = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local r = redis.call('HMGET', rkey(id), 'state', 'next_attempt_at', 'lease_until', 'sent_at',
  'attempts')
local state = r[1]
if not state then return {'missing', '', 0, ''} end
local attempts = tonumber(r[5]) or 0
if state == 'dialing' then
  if (tonumber(r[3]) or 0) > now then
    if mode == 'deliver' then note(id, 'duplicate delivery ignored', 'being dialled') end
    return {'busy', state, attempts, ''}
  end
  if r[4] and r[4] ~= '' then
    move(id, state, 'unknown')
    redis.call('HSET', rkey(id), 'last_error', ARGV[9])
    note(id, 'claim expired after sending', 'the call may have been placed; never redialled')
    settle(id, ttl)
    return {'unknown', 'unknown', attempts, ''}
  end
  if mode == 'sweep' then
    move(id, state, 'retrying')
    redis.call('HDEL', rkey(id), 'claim', 'lease_until')
    redis.call('HSET', rkey(id), 'next_attempt_at', now)
    redis.call('ZADD', DUE, now + redeliver_after, id)
    note(id, 'claim expired before sending', 'the worker was lost; republished')
    return {'requeued', 'retrying', attempts, ''}
  end
  note(id, 'claim expired before sending', 'the worker was lost; claimed again')
elseif state == 'queued' or state == 'scheduled' or state == 'retrying' then
  if mode == 'sweep' then return {'due', state, attempts, ''} end
  if (tonumber(r[2]) or 0) > now then return {'early', state, attempts, ''} end
else
  if mode == 'deliver' then note(id, 'duplicate delivery ignored', 'already ' .. state) end
  return {'done', state, attempts, ''}
end
if attempts >= max_attempts then
  move(id, state, 'failed')
  note(id, 'gave up', 'all ' .. max_attempts .. ' attempts spent')
  settle(id, ttl)
  return {'done', 'failed', attempts, ''}
end
local pause = tonumber(redis.call('GET', ns .. ':throttle') or '0') or 0
if pause > now then
  local at = pause + tonumber(ARGV[10])
  if state ~= 'scheduled' then move(id, state, 'scheduled') end
  redis.call('HDEL', rkey(id), 'claim', 'lease_until')
  redis.call('HSET', rkey(id), 'next_attempt_at', at)
  redis.call('ZADD', DUE, at, id)
  note(id, 'waiting for the rate limit',
    string.format('the API asked every client to pause; next attempt in %.1fs', at - now))
  return {'throttled', 'scheduled', attempts, ''}
end
attempts = attempts + 1
redis.call('HSET', rkey(id), 'claim', token, 'lease_until', now + lease, 'sent_at', '',
  'attempts', attempts, 'republished', 0)
move(id, state, 'dialing')
redis.call('ZADD', DUE, now + lease, id)
note(id, 'claimed', nil)
return {'claimed', 'dialing', attempts, redis.call('HGET', rkey(id), 'request')}
"""
)

# ARGV: ns, id, token. Returns 1 when the caller still holds a live claim and may send.
MARK_SENT = (
    PRELUDE
    + r"""
local id, token = ARGV[2], ARGV[3]
local r = redis.call('HMGET', rkey(id), 'state', 'claim', 'lease_until')
if r[1] ~= 'dialing' or r[2] ~= token or (tonumber(r[3]) or 0) <= now then return 0 end
redis.call('HSET', rkey(id), 'sent_at', now)
note(id, 'sending', nil)
return 1
"""
)

# ARGV: ns, id, token, new_state, fields (JSON object), event, detail, due_in, ttl, redeliver_after,
#       pause_s. Only the holder of the claim may finish; a late answer may also settle an
# 'unknown'. pause_s > 0 (the API's Retry-After) pauses every worker's claims that long.
FINISH = (
    PRELUDE
    + r"""
local id, token, new = ARGV[2], ARGV[3], ARGV[4]
local fields, event, detail = cjson.decode(ARGV[5]), ARGV[6], ARGV[7]
local due_in, ttl, redeliver_after = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local r = redis.call('HMGET', rkey(id), 'state', 'claim')
if (r[1] ~= 'dialing' and r[1] ~= 'unknown') or r[2] ~= token then return {0, r[1] or ''} end
for k, v in pairs(fields) do
  if v == cjson.null or v == '' then redis.call('HDEL', rkey(id), k)
  else redis.call('HSET', rkey(id), k, v) end
end
redis.call('HDEL', rkey(id), 'lease_until')
local pause_s = tonumber(ARGV[11]) or 0
if pause_s > 0 then
  local pkey = ns .. ':throttle'
  if now + pause_s > (tonumber(redis.call('GET', pkey) or '0') or 0) then
    redis.call('SET', pkey, now + pause_s, 'PX', math.ceil(pause_s * 1000) + 1000)
  end
end
move(id, r[1], new)
note(id, event, detail)
if TERMINAL[new] then
  settle(id, ttl)
else
  -- a late answer can move an 'unknown' (which had started its retention) back to pending
  redis.call('PERSIST', rkey(id))
  redis.call('PERSIST', hkey(id))
  local at = now + tonumber(due_in)
  redis.call('HSET', rkey(id), 'next_attempt_at', at)
  redis.call('ZADD', DUE, at, id)
end
return {1, new}
"""
)

# ARGV: ns, id, action ('cancel' | 'retry'), who. Returns {ok, state}.
MANUAL = (
    PRELUDE
    + r"""
local id, action, who = ARGV[2], ARGV[3], ARGV[4]
local state = redis.call('HGET', rkey(id), 'state')
if not state then return {0, ''} end
if action == 'cancel' then
  if state ~= 'queued' and state ~= 'scheduled' and state ~= 'retrying' then return {0, state} end
  move(id, state, 'cancelled')
  note(id, 'cancelled', 'by ' .. who)
  settle(id, tonumber(ARGV[5]))
  return {1, 'cancelled'}
end
if state ~= 'unknown' and state ~= 'failed' then return {0, state} end
local previous = redis.call('HGET', rkey(id), 'attempts')
redis.call('PERSIST', rkey(id))
redis.call('PERSIST', hkey(id))
redis.call('HDEL', rkey(id), 'claim', 'sent_at', 'lease_until')
redis.call('HSET', rkey(id), 'attempts', 0, 'next_attempt_at', now, 'republished', 0)
move(id, state, 'retrying')
note(id, 'manual retry', 'by ' .. who .. ' after ' .. state .. ' (' .. previous .. ' attempts)')
redis.call('ZADD', DUE, now, id)
return {1, 'retrying'}
"""
)

# ARGV: ns, limit, redeliver_after, ttl. Returns a flat list: id, state, queue, request, ...
# Each entry taken is pushed back by a growing step, so concurrent sweepers never both take it
# and a request whose message is stuck in a long queue is not republished over and over.
# It also trims the indices of records past their retention (they expire on their own).
TAKE_DUE = (
    PRELUDE
    + r"""
local limit, step, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- A finished record expires ttl after it finished, which is its score in its state's index.
for state, _ in pairs(TERMINAL) do
  local index = ns .. ':state:' .. state
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now - ttl, 'LIMIT', 0, 500)) do
    redis.call('ZREM', index, gone)
    redis.call('ZREM', ns .. ':all', gone)
  end
end
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', DUE, '-inf', now, 'LIMIT', 0, limit)) do
  local r = redis.call('HMGET', rkey(id), 'state', 'queue', 'request', 'republished')
  if not r[1] or TERMINAL[r[1]] then
    redis.call('ZREM', DUE, id)
  else
    local n = tonumber(r[4]) or 0
    redis.call('ZADD', DUE, now + step * math.pow(2, math.min(n, 4)), id)
    if r[1] ~= 'dialing' then redis.call('HSET', rkey(id), 'republished', n + 1) end
    table.insert(out, id); table.insert(out, r[1]); table.insert(out, r[2]); table.insert(out, r[3])
  end
end
return out
"""
)
