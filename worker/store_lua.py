"""The status store's transitions as Lua scripts: each runs atomically inside Redis.

Each script names its arguments; its body reads them as `ARG.<name>` (strings: use
tonumber), and callers pass them as keywords (`LuaScript.args`), so the two can never drift
apart. Every script starts with the prelude: Redis' own clock (TIME, so leases and due times
mean the same to every worker), the key names, the state sets from `records`, and helpers.
Keys are derived from the namespace, so this targets a single Redis, not Cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from followup.worker.records import TERMINAL_STATES, WAITING_STATES, State


def _lua_set(name: str, states: frozenset[State]) -> str:
    members = ", ".join(f"{s.value}=true" for s in sorted(states))
    return f"local {name} = {{{members}}}\n"


# A request's history keeps its first HISTORY_HEAD entries and its last HISTORY_TAIL (a few KB).
HISTORY_HEAD, HISTORY_TAIL = 10, 20

PRELUDE = (
    _lua_set("TERMINAL", TERMINAL_STATES)
    + _lua_set("WAITING", WAITING_STATES)
    + f"local HISTORY_HEAD, HISTORY_TAIL = {HISTORY_HEAD}, {HISTORY_TAIL}\n"
    + r"""
local ns = ARG.ns
local TTL, IDEM_TTL = tonumber(ARG.ttl), tonumber(ARG.idem_ttl)
local REDELIVER_AFTER, MAX_WAIT = tonumber(ARG.redeliver_after), tonumber(ARG.max_wait)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local DUE = ns .. ':due'
local function rkey(id) return ns .. ':req:' .. id end
local function hkey(id) return ns .. ':hist:' .. id end
-- The history is bounded, whatever the platform sends and however long a request waits:
-- it keeps its first HISTORY_HEAD entries and its last HISTORY_TAIL, and in between one
-- entry, 'entries left out', counts what was dropped (since: the first one's time, at: the
-- last one's).
local LEFT_OUT = 'entries left out'
local function note(id, event, detail)
  local r = redis.call('HMGET', rkey(id), 'state', 'attempts')
  local entry = {at = now, event = event, state = r[1], attempt = tonumber(r[2]) or 0}
  if detail and detail ~= '' then entry['detail'] = detail end
  local h = hkey(id)
  if redis.call('RPUSH', h, cjson.encode(entry)) <= HISTORY_HEAD + 1 + HISTORY_TAIL then return end
  local raw = redis.call('LINDEX', h, HISTORY_HEAD)
  local marker, dropped = cjson.decode(raw), cjson.decode(redis.call('LINDEX', h, HISTORY_HEAD + 1))
  if marker.event ~= LEFT_OUT then
    marker = {event = LEFT_OUT, count = 1, since = marker.at}
  end
  marker.count = marker.count + 1
  marker.at, marker.state, marker.attempt = dropped.at, dropped.state, dropped.attempt
  marker.detail = string.format(
    '%d entries left out: the history keeps its first %d and its last %d',
    marker.count, HISTORY_HEAD, HISTORY_TAIL)
  redis.call('LSET', h, HISTORY_HEAD + 1, cjson.encode(marker))
  redis.call('LREM', h, 1, raw)
end
-- A note that repeats the history's last event (copies of one message, delivered again and
-- again) counts on that entry (times, last_at) instead of adding one: copies cannot grow it.
local function note_again(id, event, detail)
  local last = redis.call('LINDEX', hkey(id), -1)
  local ok, entry = pcall(cjson.decode, last or '')
  if ok and type(entry) == 'table' and entry.event == event then
    entry.times, entry.last_at = (tonumber(entry.times) or 1) + 1, now
    redis.call('LSET', hkey(id), -1, cjson.encode(entry))
  else
    note(id, event, detail)
  end
end
-- Leave whatever wait the request was in (its entry in ns:waiting:<reason>).
local function unwait(id)
  local reason = redis.call('HGET', rkey(id), 'waiting_for')
  if reason and reason ~= '' then
    redis.call('ZREM', ns .. ':waiting:' .. reason, id)
    redis.call('HDEL', rkey(id), 'waiting_for')
  end
end
-- The per-minute outcome counters count requests, not transitions: a request is counted in
-- the minute it reached its outcome, under that outcome, and taken out again when it leaves
-- it (unknown -> placed by a lookup, a person's retry), so each counts once, as it is now.
local function uncount(id, old)
  local minute = redis.call('HGET', rkey(id), 'counted_in')
  if not minute or minute == '' then return end
  if redis.call('EXISTS', minute) == 1 then redis.call('HINCRBY', minute, old, -1) end
  redis.call('HDEL', rkey(id), 'counted_in')
end
local function move(id, old, new)
  if old and TERMINAL[old] then uncount(id, old) end
  if old then redis.call('ZREM', ns .. ':state:' .. old, id) end
  if old and WAITING[old] then unwait(id) end
  if old == 'unknown' then redis.call('ZREM', ns .. ':reconcile', id) end
  redis.call('ZADD', ns .. ':state:' .. new, now, id)
  redis.call('HSET', rkey(id), 'state', new, 'updated_at', now)
end
-- When a request must be given up if it is still waiting: its own not_after, or
-- give_up_at (FOLLOWUP_MAX_WAIT_S after it was enqueued, or after its not_before if later),
-- whichever comes first.
local function deadline_of(id)
  local r = redis.call('HMGET', rkey(id), 'give_up_at', 'not_after')
  local give_up, not_after = tonumber(r[1]) or math.huge, tonumber(r[2]) or math.huge
  return math.min(give_up, not_after), not_after <= give_up
end
-- Make a request wait until `at` (a due time: no worker, no message holds it meanwhile),
-- saying what for; never past its deadline, when it comes back to be given up.
-- state: 'scheduled' (a gate) or 'retrying' (after an attempt).
local function wait(id, old, state, at, reason, event, detail)
  at = math.min(at, (deadline_of(id)))
  if old ~= state then move(id, old, state) else unwait(id) end
  redis.call('HDEL', rkey(id), 'lease_until')
  redis.call('HSET', rkey(id), 'next_attempt_at', at, 'waiting_for', reason)
  redis.call('ZADD', DUE, at, id)
  redis.call('ZADD', ns .. ':waiting:' .. reason, at, id)
  note(id, event, detail)
end
-- A fleet-wide pause (ns:pause:<name>) holds until its time; 0 if there is none.
local function paused_until(name)
  return tonumber(redis.call('GET', ns .. ':pause:' .. name) or '0') or 0
end
local function pause(name, seconds)
  local ends = now + seconds
  if ends > paused_until(name) then
    redis.call('SET', ns .. ':pause:' .. name, ends, 'PX', math.ceil(seconds * 1000) + 1000)
    redis.call('SADD', ns .. ':pauses', name)  -- the names, for `followup stats`
  end
end
-- The global rate limit: GCRA in its virtual-scheduling form, with reservations. A send
-- takes the next slot (ns:limiter 'tat': the theoretical arrival time). The rate in force
-- is the limit, halved by a 429 and won back linearly at RECOVER of the limit a second.
-- Slots are spaced for HEADROOM of it: a sender exactly at a platform's limit puts the limit
-- plus one into a counting window at its edge, and that one 429 would halve the rate.
local LIMITER = ns .. ':limiter'
local RECOVER, HEADROOM, SLOT_GRACE = 0.05, 0.98, 0.02
local function rate_in_force(limit)
  local l = redis.call('HMGET', LIMITER, 'rate', 'rate_at')
  local rate, at = tonumber(l[1]), tonumber(l[2])
  if not rate or not at then return limit end
  return math.min(limit, rate + (now - at) * limit * RECOVER)
end
-- 'plan_rate' is the lowest rate at which a slot still ahead was planned (REPLAN below);
-- 'last' the latest slot reserved.
local function reserve(limit, burst)
  local rate = rate_in_force(limit)
  local interval = 1 / (rate * HEADROOM)
  local l = redis.call('HMGET', LIMITER, 'tat', 'plan_rate')
  local ahead = tonumber(l[1]) or 0
  local plan = tonumber(l[2])
  if ahead <= now or not plan then plan = rate else plan = math.min(plan, rate) end
  local tat = math.max(ahead, now)
  local slot = math.max(now, tat - (burst - 1) * interval)
  redis.call('HSET', LIMITER, 'tat', math.max(tat, slot) + interval, 'rate', rate, 'rate_at', now,
    'plan_rate', plan, 'last', slot)
  return slot
end
-- Void every slot reserved so far (ns:limiter 'epoch' moves on; a request's slot of an
-- older epoch is taken again): the next slot is `from`. When the breaker opens, the slots
-- reserved for calls that now wait for it are given back, so its probe, and the calls after
-- it, do not queue behind a backlog of slots nobody will use.
local function void_slots(from)
  local epoch = (tonumber(redis.call('HGET', LIMITER, 'epoch')) or 0) + 1
  redis.call('HSET', LIMITER, 'tat', from, 'epoch', epoch)
end
local function slot_epoch() return redis.call('HGET', LIMITER, 'epoch') or '0' end
-- The calls waiting in the due set for their slots (ns:waiting:rate_limit, not yet due; at
-- most REPLAN_MAX, the earliest: later ones keep theirs) planned again at `rate`, in their
-- slots' order: the first keeps its slot, the rest follow one interval apart, never within
-- an interval after 'fixed' (the latest slot of a call held in its thread or of a question,
-- which the re-plan does not own), never due past their deadline. Slower (a 429 cut the
-- rate): a slot only moves later, so the whole backlog goes at the cut rate, not just what
-- is planned after the cut. Faster (the rate recovered): a slot only moves earlier. (An
-- agent's spacing holds: a call takes a slot only once the agent's previous slot is a
-- spacing behind, so a slot still ahead is its agent's only one.)
local REPLAN, REPLAN_LAST, REPLAN_MAX = 1.5, 1.1, 2000
local function respace(policy, rate, slower)
  local l = redis.call('HMGET', LIMITER, 'tat', 'last', 'epoch', 'fixed')
  local waiting = ns .. ':waiting:rate_limit'
  local ids = redis.call('ZRANGEBYSCORE', waiting, '(' .. now, '+inf', 'LIMIT', 0, REPLAN_MAX)
  local interval, epoch = 1 / (rate * HEADROOM), l[3] or '0'
  local planned_slots = {}
  for _, w in ipairs(ids) do
    local r = redis.call('HMGET', rkey(w), 'slot', 'slot_epoch', 'slot_user')
    local old = tonumber(r[1])
    -- One whose deadline comes before its slot is only waiting to be given up: no place.
    if old and (r[2] or '0') == epoch and deadline_of(w) >= old then
      planned_slots[#planned_slots + 1] = {id = w, old = old, text = r[1], user = r[3]}
    end
  end
  table.sort(planned_slots, function(a, b) return a.old < b.old end)
  -- A cut with more waiting than one pass moves: the slots of the rest, planned at the old
  -- rate, would be overlapped by the moved ones. Every slot reserved so far is given back (a
  -- new epoch, as when the breaker opens) but those this pass plans: the rest, and any call
  -- holding its slot in a thread, take a new one after the moved backlog.
  local renewed = slower and #ids >= REPLAN_MAX
  if renewed then
    epoch = tostring(tonumber(epoch) + 1)
    redis.call('HSET', LIMITER, 'epoch', epoch)
  end
  local floor = (tonumber(l[4]) or 0) + interval
  local cursor, last_old, last_new = nil, nil, nil
  for _, e in ipairs(planned_slots) do
    local slot = e.old
    if cursor and slower then
      slot = math.max(e.old, cursor, floor)
    elseif cursor then
      slot = math.min(e.old, math.max(cursor, floor, now))
    end
    if slot ~= e.old then
      if e.user then  -- the agent's next call is spaced from this one's new slot
        local akey = ns .. ':agent:' .. e.user
        if redis.call('HGET', akey, 'id') == e.id then
          redis.call('HSET', akey, 'at', slot)
          redis.call('PEXPIRE', akey, math.ceil((slot - now + policy.spacing) * 1000) + 1000)
        end
      end
      local due = math.min(math.max(now, slot - policy.lead), (deadline_of(e.id)))
      redis.call('HSET', rkey(e.id), 'slot', slot, 'paced_at', now, 'next_attempt_at', due)
      redis.call('ZADD', DUE, due, e.id)
      redis.call('ZADD', waiting, due, e.id)
    end
    if renewed then redis.call('HSET', rkey(e.id), 'slot_epoch', epoch) end
    cursor, last_old, last_new = slot + interval, e.text, slot
  end
  if not last_new then return end
  if renewed then  -- every other slot was given back: the next follows the moved backlog
    -- (and a question's slot, which has no epoch)
    local next_slot = math.max(last_new, tonumber(l[4]) or 0) + interval
    redis.call('HSET', LIMITER, 'tat', next_slot, 'last', last_new)
  elseif slower then  -- what is reserved next comes after the moved backlog
    local tat = tonumber(l[1]) or 0
    if last_new + interval > tat then redis.call('HSET', LIMITER, 'tat', last_new + interval) end
    if last_old == l[2] then redis.call('HSET', LIMITER, 'last', last_new) end
  elseif last_old == l[2] and #ids < REPLAN_MAX then
    -- The latest slot was a waiter's, and every waiter was planned again: the limiter's
    -- next slot follows the new plan.
    redis.call('HSET', LIMITER, 'tat', last_new + interval, 'last', last_new)
  end
end
-- Once the rate in force is REPLAN times the rate the backlog was planned at (or back at
-- the limit, from below it by more than REPLAN_LAST), the backlog moves in.
local function replan(policy)
  local l = redis.call('HMGET', LIMITER, 'plan_rate', 'tat')
  local planned = tonumber(l[1])
  if not planned or (tonumber(l[2]) or 0) <= now then return end
  local rate = rate_in_force(policy.limit)
  local recovered = rate >= policy.limit and planned < policy.limit / REPLAN_LAST
  if rate < planned * REPLAN and not recovered then return end
  redis.call('HSET', LIMITER, 'plan_rate', rate, 'rate', rate, 'rate_at', now)
  respace(policy, rate, false)
end
-- A slot that a call holds in its thread, or a question takes: the re-plan keeps clear of it.
local function fix_slot(slot)
  if slot > (tonumber(redis.call('HGET', LIMITER, 'fixed')) or 0) then
    redis.call('HSET', LIMITER, 'fixed', slot)
  end
end
-- A 429 halves the rate, as AIMD does: at most once a round trip's worth of answers. The
-- backlog waiting for its slots is spaced out at the cut rate at once (respace), so the
-- calls paced before the cut are only the few held in threads, and those in flight: a 429
-- to a call paced before the last cut (paced_at, else sent_at) is that cut's news, not a
-- reason for another (so six 429s to calls paced together halve it once, not to the
-- floor). Returns the rate in force, or nil if not cut.
local function slow_down(policy, paced_at)
  local cut = tonumber(redis.call('HGET', LIMITER, 'cut_at')) or 0
  if paced_at and paced_at < cut then return nil end
  local rate = math.max(policy.limit * 0.1, rate_in_force(policy.limit) * 0.5)
  redis.call('HSET', LIMITER, 'rate', rate, 'rate_at', now, 'cut_at', now, 'plan_rate', rate)
  respace(policy, rate, true)
  return rate
end
-- The breaker (ns:breaker): open after policy.failures transport failures or 5xx answers in
-- a row; after its cool-down one request goes as a probe; the probe's answer closes it, or
-- opens it again with the cool-down doubled (up to ten times the first). Opening it voids
-- the slots reserved so far; closing it makes what waited for it due at once.
local BREAKER = ns .. ':breaker'
-- Returns (until when to wait, or nil; whether this request would be the probe). The probe
-- role is taken (take_probe) only once its call is about to leave, never while it waits.
local function breaker_gate(id)
  local b = redis.call('HMGET', BREAKER, 'state', 'ends', 'probe', 'probe_ends')
  if b[1] ~= 'open' then return nil, false end
  local ends = tonumber(b[2]) or 0
  if now < ends then return ends, false end
  local probe_ends = tonumber(b[4]) or 0
  if b[3] and b[3] ~= '' and b[3] ~= id and probe_ends > now then return probe_ends, false end
  return nil, true
end
local function take_probe(id, policy)
  redis.call('HSET', BREAKER, 'probe', id, 'probe_ends', now + policy.probe_for)
end
local function breaker_waiters_go()
  local waiting = ns .. ':waiting:breaker'
  for _, w in ipairs(redis.call('ZRANGE', waiting, 0, 999)) do
    redis.call('ZADD', DUE, now, w)
    redis.call('ZADD', waiting, now, w)
    redis.call('HSET', rkey(w), 'next_attempt_at', now)
  end
end
local function breaker_heard(id, health, policy)
  if health == '' then  -- the answer says nothing of an outage (a 429): the probe's role is free
    local probe = redis.call('HGET', BREAKER, 'probe')
    if probe == id then
      redis.call('HSET', BREAKER, 'probe', '')
      breaker_waiters_go()
    end
    return ''
  end
  if health == 'ok' then
    -- 'closed' only if it was open: a count of failures below the threshold is just reset.
    local was = redis.call('HGET', BREAKER, 'state')
    redis.call('DEL', BREAKER)
    if was == 'open' then
      breaker_waiters_go()
      return 'closed'
    end
    return ''
  end
  if health ~= 'failure' then return '' end
  local b = redis.call('HMGET', BREAKER, 'state', 'failures', 'cooldown', 'probe')
  if b[1] == 'open' then
    if b[4] ~= id then return '' end
    local cooldown = math.min((tonumber(b[3]) or policy.cooldown) * 2, policy.cooldown * 10)
    redis.call('HSET', BREAKER, 'ends', now + cooldown, 'cooldown', cooldown, 'probe', '')
    void_slots(now + cooldown)
    return 'reopened'
  end
  local failures = (tonumber(b[2]) or 0) + 1
  if failures < policy.failures then
    redis.call('HSET', BREAKER, 'failures', failures)
    return ''
  end
  redis.call('HSET', BREAKER, 'state', 'open', 'ends', now + policy.cooldown,
    'cooldown', policy.cooldown, 'failures', 0, 'probe', '')
  void_slots(now + policy.cooldown)
  return 'opened'
end
-- The per-number cap: ns:number:<sha1 of the E.164 number> holds the calls sent to that
-- number (member '<id>:<attempt>', scored by when), kept for the cap's window. The key is
-- a digest, so the number is not in the clear in key names.
local function number_key(id)
  local ok, request = pcall(cjson.decode, redis.call('HGET', rkey(id), 'request') or '{}')
  if not ok or type(request) ~= 'table' or type(request.phone_number) ~= 'string' then
    return nil
  end
  return ns .. ':number:' .. redis.sha1hex(request.phone_number)
end
-- Every send marker, by agent and number: ns:sends:<sha1 of '<user_id> <number>'> holds
-- '<id>:<attempt>' scored by when, for a day. A lookup that matches calls by agent, number
-- and time (a platform whose calls do not name their request) settles a request only if no
-- other request's marker shares its window.
local function sends_key(id)
  local ok, request = pcall(cjson.decode, redis.call('HGET', rkey(id), 'request') or '{}')
  if not ok or type(request) ~= 'table' or type(request.phone_number) ~= 'string' then
    return nil
  end
  return ns .. ':sends:' .. redis.sha1hex(tostring(request.user_id) .. ' ' .. request.phone_number)
end
-- The platform did nothing with attempt `attempt`: it does not count against the cap.
local function uncap(id, attempt)
  local key = redis.call('HGET', rkey(id), 'number_key')
  if key and key ~= '' then redis.call('ZREM', key, id .. ':' .. attempt) end
end
-- The idempotency key of a request, if it still points to that request.
local function ikey_of(id)
  local key = redis.call('HGET', rkey(id), 'idempotency_key')
  if not key or key == '' then return nil end
  local ikey = ns .. ':idem:' .. key
  if redis.call('GET', ikey) ~= id then return nil end
  return ikey
end
-- Pending again (a person's retry, a late answer): the record and its key are kept.
local function keep(id)
  redis.call('PERSIST', rkey(id))
  redis.call('PERSIST', hkey(id))
  local ikey = ikey_of(id)
  if ikey then redis.call('PERSIST', ikey) end
end
-- Every terminal transition, in the same script as the transition itself: an entry in the
-- outcome stream (what producers read: never the phone number), the fleet's running totals
-- of outcomes reached (ns:counts), and the per-minute counters `followup stats` reads
-- (requests by the outcome they reached in that minute; enqueue-to-placed times in
-- log-scale buckets).
local function record_outcome(id, state)
  local r = redis.call('HMGET', rkey(id), 'request', 'conversation_id', 'last_error',
    'idempotency_key', 'created_at')
  local ok, request = pcall(cjson.decode, r[1] or '{}')
  local contact = ok and type(request) == 'table' and request.contact_id or ''
  local ok2, last_error = pcall(cjson.decode, r[3] or '{}')
  local code = ok2 and type(last_error) == 'table' and last_error.code or ''
  redis.call('XADD', ns .. ':outcomes', 'MAXLEN', '~', tonumber(ARG.outcomes_maxlen), '*',
    'request_id', id, 'state', state, 'conversation_id', r[2] or '',
    'code', type(code) == 'string' and code or '', 'idempotency_key', r[4] or '',
    'contact_id', type(contact) == 'string' and contact or '', 'at', tostring(now))
  redis.call('HINCRBY', ns .. ':counts', state, 1)
  local minute = ns .. ':stats:' .. math.floor(now / 60)
  redis.call('HINCRBY', minute, state, 1)
  redis.call('HSET', rkey(id), 'counted_in', minute)
  if state == 'placed' and tonumber(r[5]) then
    local took = math.max(now - tonumber(r[5]), 0.001)
    redis.call('HINCRBY', minute, 'took:' .. math.floor(math.log(took * 1000) / math.log(1.25)), 1)
  end
  redis.call('EXPIRE', minute, 7200)
end
-- A terminal state: retention starts, except for 'unknown', which waits for a person (or a
-- late answer), its idempotency key still guarding against a second request.
local function settle(id)
  redis.call('ZREM', DUE, id)
  local line = redis.call('HGET', rkey(id), 'agent_line')
  if line then redis.call('ZREM', line, id) end
  redis.call('HDEL', rkey(id), 'lease_until', 'next_attempt_at')
  local state = redis.call('HGET', rkey(id), 'state')
  record_outcome(id, state)
  if state == 'unknown' then
    keep(id)
    -- Sent, and no answer: the platform may be asked whether the call exists (RECONCILE).
    local sent = redis.call('HGET', rkey(id), 'sent_at')
    if sent and sent ~= '' then
      redis.call('HSET', rkey(id), 'unknown_at', now, 'lookups', 0, 'lookup_failures', 0)
      redis.call('HDEL', rkey(id), 'last_lookup_at')
      redis.call('ZADD', ns .. ':reconcile', now, id)
    end
    return
  end
  local sent = redis.call('HGET', rkey(id), 'sent_at')
  local cid = redis.call('HGET', rkey(id), 'conversation_id')
  if state == 'placed' and sent and sent ~= '' and (not cid or cid == '') then
    -- Placed without a call id (a 2xx with no body): lookups fill it in (RECONCILE).
    redis.call('HSET', rkey(id), 'lookups_since', now, 'lookups', 0, 'lookup_failures', 0)
    redis.call('ZADD', ns .. ':reconcile', now, id)
  end
  redis.call('EXPIRE', rkey(id), TTL)
  redis.call('EXPIRE', hkey(id), TTL)
  local ikey = ikey_of(id)
  if ikey then redis.call('EXPIRE', ikey, IDEM_TTL) end
end
"""
)


# Every script gets these first: the namespace, how long a finished record is kept, how long
# an idempotency key outlives its finished request, when an unclaimed request is published
# again, how long a request may wait in all before it is given up, and about how many
# entries the outcome stream keeps.
COMMON = ("ns", "ttl", "idem_ttl", "redeliver_after", "max_wait", "outcomes_maxlen")


@dataclass(frozen=True)
class LuaScript:
    """A Lua transition with named arguments (COMMON first, always)."""

    name: str
    params: tuple[str, ...]
    body: str
    # Fields each item of a batch has: ARGV after the named ones, read as the list EACH.
    each: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        names = (*COMMON, *self.params)
        binding = ", ".join(f"{p} = ARGV[{i}]" for i, p in enumerate(names, 1))
        items = ""
        if self.each:
            fields = ", ".join(f"{f} = ARGV[i + {n}]" for n, f in enumerate(self.each))
            items = (
                f"local EACH = {{}}\nfor i = {len(names) + 1}, #ARGV, {len(self.each)} do\n"
                f"  EACH[#EACH + 1] = {{{fields}}}\nend\n"
            )
        return f"local ARG = {{{binding}}}\n{items}{PRELUDE}{self.body}"

    def args(self, *, each: Sequence[Mapping[str, Any]] = (), **values: Any) -> list[Any]:
        """ARGV in the script's order; every parameter must be given, and nothing else (and
        for a batch, every field of every item)."""
        names = (*COMMON, *self.params)
        _check(self.name, names, values)
        out = [_argv(values[p]) for p in names]
        for item in each:
            _check(self.name, self.each, item)
            out += [_argv(item[f]) for f in self.each]
        return out


def _check(script: str, names: Sequence[str], values: Mapping[str, Any]) -> None:
    missing, extra = set(names) - set(values), set(values) - set(names)
    if missing or extra:
        raise TypeError(
            f"Lua script {script}: missing {sorted(missing)}, unexpected {sorted(extra)}"
        )


def _argv(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    return value


# One request's registration, for REGISTER and REGISTER_MANY; r holds the REGISTER fields.
# Returns {outcome, request_id}: created | exists | duplicate | conflict (the key's holder).
# With a message (the producer, when the broker is this Redis): a created request's task
# message is pushed onto its queue's list, and its task-sent event published, in the same step.
_REGISTER = r"""
local function register(r)
  local id, key = r.id, r.key
  if redis.call('EXISTS', rkey(id)) == 1 then return {'exists', id} end
  if key ~= '' then
    local ikey = ns .. ':idem:' .. key
    local first = redis.call('GET', ikey)
    if first and redis.call('EXISTS', rkey(first)) == 1 then
      if redis.call('HGET', rkey(first), 'digest') ~= r.digest then return {'conflict', first} end
      if r.source == 'message' then
        redis.call('SET', ns .. ':alias:' .. id, first, 'EX', IDEM_TTL + TTL)
        note_again(first, 'duplicate ignored',
          'message ' .. id .. ' carried the same idempotency key')
      end
      return {'duplicate', first}
    end
    redis.call('SET', ikey, id)  -- no expiry while the request is pending: see settle()
  end
  redis.call('DEL', ns .. ':alias:' .. id)  -- an id is its own record's from now on
  -- The wait bound counts from the later of now and not_before: "call back next week" waits.
  local not_before = tonumber(r.not_before) or now
  redis.call('HSET', rkey(id), 'request', r.request, 'digest', r.digest, 'idempotency_key', key,
    'attempts', 0, 'created_at', now, 'queue', r.queue, 'source', r.source, 'republished', 0,
    'give_up_at', math.max(now, not_before) + MAX_WAIT)
  if r.not_before ~= '' then redis.call('HSET', rkey(id), 'not_before', r.not_before) end
  if r.not_after ~= '' then redis.call('HSET', rkey(id), 'not_after', r.not_after) end
  if r.last_error ~= '' then redis.call('HSET', rkey(id), 'last_error', r.last_error) end
  move(id, nil, r.state)
  redis.call('ZADD', ns .. ':all', now, id)
  -- The agent's line (SEND serves one agent's requests in enqueue order), until it ends.
  local ok, fields = pcall(cjson.decode, r.request)
  local user = ok and type(fields) == 'table' and fields.user_id
  if not TERMINAL[r.state] and type(user) == 'string' then
    local line = ns .. ':agentq:' .. user
    -- Its place: strictly after everything already in the line, so a batch registered on
    -- one clock reading keeps its order (a tie would be broken by request id).
    local last = tonumber(redis.call('ZRANGE', line, -1, -1, 'WITHSCORES')[2]) or 0
    local place = string.format('%.6f', math.max(now, last + 0.000001))
    redis.call('ZADD', line, place, id)
    redis.call('EXPIRE', line, math.ceil(MAX_WAIT) + 86400)
    redis.call('HSET', rkey(id), 'agent_line', line, 'line_at', place)
  end
  if TERMINAL[r.state] then
    note(id, r.state, 'from ' .. r.source)
    settle(id)
  else
    redis.call('HSET', rkey(id), 'next_attempt_at', now)
    -- If no worker claims it by then (message lost, worker died holding it), the sweeper
    -- republishes.
    redis.call('ZADD', DUE, now + REDELIVER_AFTER, id)
    note(id, 'enqueued', 'from ' .. r.source)
    if r.message ~= '' then
      redis.call('LPUSH', r.queue, r.message)  -- kombu's Redis transport: LPUSH, BRPOP
      redis.call('PUBLISH', r.event_channel, r.event)
    end
  end
  return {'created', id}
end
"""
REGISTER = LuaScript(
    "register",
    (
        *("id", "request", "digest", "key", "state", "queue", "last_error", "source"),
        *("not_before", "not_after"),
        *("message", "event_channel", "event"),
    ),
    _REGISTER
    + r"""
return register({id = ARG.id, request = ARG.request, digest = ARG.digest, key = ARG.key,
  state = ARG.state, queue = ARG.queue, last_error = ARG.last_error, source = ARG.source,
  not_before = ARG.not_before, not_after = ARG.not_after, message = ARG.message,
  event_channel = ARG.event_channel, event = ARG.event})
""",
)

# A producer's batch in one script: the shared fields once, then each request's own (EACH).
# Returns {outcome, request_id, outcome, request_id, ...} in the batch's order.
REGISTER_MANY = LuaScript(
    "register_many",
    ("state", "queue", "source", "event_channel"),
    _REGISTER
    + r"""
local out = {}
for _, r in ipairs(EACH) do
  r.state, r.queue, r.source, r.event_channel = ARG.state, ARG.queue, ARG.source, ARG.event_channel
  r.last_error = ''
  local result = register(r)
  out[#out + 1] = result[1]
  out[#out + 1] = result[2]
end
return out
""",
    each=("id", "request", "digest", "key", "not_before", "not_after", "message", "event"),
)

# Returns {outcome, state, attempts, request JSON, and when claimed: the store's clock, the
# record's not_after ('' if none) and asked_free}. mode: 'deliver' | 'sweep'. asked_free =
# '1': this attempt's busy check already said the agent is free (SEND), before the request
# waited for a slot of the rate limit.
# A claim spends no attempt: the send marker does (SEND), so a worker lost before sending
# costs the request nothing. pauses: a JSON list of [pause name, reason]: while one holds
# (the API asked every client to wait, the credentials were refused ...), a due request is
# not claimed but waits in 'scheduled' until it ends (plus spread), saying what for.
CLAIM = LuaScript(
    "claim",
    ("id", "token", "lease", "mode", "unknown_error", "spread", "pauses"),
    r"""
local id, mode = ARG.id, ARG.mode
local r = redis.call('HMGET', rkey(id), 'state', 'next_attempt_at', 'lease_until', 'sent_at',
  'attempts')
local state = r[1]
if not state then return {'missing', '', 0, ''} end
local attempts = tonumber(r[5]) or 0
if state == 'dialing' then
  if (tonumber(r[3]) or 0) > now then
    if mode == 'deliver' then note_again(id, 'duplicate delivery ignored', 'being dialled') end
    return {'busy', state, attempts, ''}
  end
  if r[4] and r[4] ~= '' then
    move(id, state, 'unknown')
    redis.call('HSET', rkey(id), 'last_error', ARG.unknown_error)
    note(id, 'claim expired after sending', 'the call may have been placed; never redialled')
    settle(id)
    return {'unknown', 'unknown', attempts, ''}
  end
  if mode == 'sweep' then
    move(id, state, 'retrying')
    redis.call('HDEL', rkey(id), 'claim', 'lease_until')
    redis.call('HSET', rkey(id), 'next_attempt_at', now)
    -- Its due time stays as the sweeper's TAKE_DUE held it: PUBLISHED moves it.
    note(id, 'claim expired before sending', 'the worker was lost; republished')
    return {'requeued', 'retrying', attempts, ''}
  end
  note(id, 'claim expired before sending', 'the worker was lost; claimed again')
elseif WAITING[state] then
  if mode == 'sweep' then return {'due', state, attempts, ''} end
  if (tonumber(r[2]) or 0) > now then return {'early', state, attempts, ''} end
else
  if mode == 'deliver' then note_again(id, 'duplicate delivery ignored', 'already ' .. state) end
  return {'done', state, attempts, ''}
end
local deadline, by_window = deadline_of(id)
if now >= deadline then
  local reason = redis.call('HGET', rkey(id), 'waiting_for') or ''
  local code, message = 'wait.exceeded', string.format(
    'not placed within FOLLOWUP_MAX_WAIT_S (%ds) of being enqueued (or of its not_before); '
      .. 'it last waited for %s',
    MAX_WAIT, reason ~= '' and reason or 'a worker')
  if by_window then
    code, message = 'window.missed', 'its not_after passed while it waited; never dialled'
  elseif reason == 'agent_busy' then
    code, message = 'agent.unavailable', 'the agent stayed on other calls until the wait ran out'
  end
  move(id, state, 'failed')
  redis.call('HSET', rkey(id), 'last_error', cjson.encode({code = code, message = message}))
  redis.call('HDEL', rkey(id), 'claim')
  note(id, 'gave up', message)
  settle(id)
  return {'done', 'failed', attempts, ''}
end
for _, gate in ipairs(cjson.decode(ARG.pauses)) do
  local ends = paused_until(gate[1])
  if ends > now then
    local at = ends + tonumber(ARG.spread)
    redis.call('HDEL', rkey(id), 'claim')
    wait(id, state, 'scheduled', at, gate[2], 'waiting for ' .. gate[2],
      string.format('a fleet-wide pause; next attempt in %.1fs', at - now))
    return {'paused', 'scheduled', attempts, ''}
  end
end
-- An open breaker holds claims too, so nothing is tried (not even a token) until its
-- cool-down ends; the probe is chosen at the send marker.
local b = redis.call('HMGET', BREAKER, 'state', 'ends')
if b[1] == 'open' and (tonumber(b[2]) or 0) > now then
  local at = tonumber(b[2]) + tonumber(ARG.spread)
  redis.call('HDEL', rkey(id), 'claim')
  wait(id, state, 'scheduled', at, 'breaker', 'waiting for breaker',
    'the platform kept failing; the fleet waits')
  return {'paused', 'scheduled', attempts, ''}
end
-- A busy check's "free" holds only over the rate-limit wait that followed it.
local kept = redis.call('HMGET', rkey(id), 'waiting_for', 'asked_free')
local asked = (kept[1] == 'rate_limit' and kept[2]) or ''
redis.call('HDEL', rkey(id), 'asked_free')
redis.call('HSET', rkey(id), 'claim', ARG.token, 'lease_until', now + tonumber(ARG.lease),
  'sent_at', '', 'republished', 0)
move(id, state, 'dialing')
redis.call('ZADD', DUE, now + tonumber(ARG.lease), id)
note(id, 'claimed', nil)
-- The record's not_after, not the request's: a person's retry clears it (MANUAL).
local window = redis.call('HMGET', rkey(id), 'request', 'not_after', 'attempts_base')
return {'claimed', 'dialing', attempts, window[1], tostring(now), window[2] or '', asked,
  window[3] or '0'}
""",
)

# The send marker, written just before the create-call request leaves, after the fleet's
# gates, all at once: the pauses, the breaker, the agent's spacing and the global limiter.
# Returns one of
#   {'sent', attempts}: send now; attempts counts this one
#   {'hold', seconds}: the reserved slot is that near: wait in the thread, then call again
#   {'wait', reason, at}: the request now waits in 'scheduled' until `at`; send nothing
#   {'lost'}: the caller no longer holds a live claim; send nothing
#   {'closed', now}: its calling window (or not_after) closed at `closes`, which the caller
#     worked out at the claim: send nothing; the claim is still held, to defer the request
# policy: {limit, burst, spacing, hold, lead, failures, cooldown, probe_for, number_cap,
# number_window} (a JSON object). With number_cap > 0, a number already called number_cap
# times in the last number_window seconds (anywhere in the fleet) waits for 'number_cap'
# until its oldest such call leaves the window; the call counts only once it is sent.
# asked = 1: the agent's busy check said free for this attempt; a request that now waits for
# a rate-limit slot keeps that answer (asked_free) and is not asked again; any other wait,
# and the send itself, drop it.
SEND = LuaScript(
    "send",
    ("id", "token", "user", "pauses", "policy", "spread", "closes", "asked"),
    r"""
local id, policy = ARG.id, cjson.decode(ARG.policy)
local r = redis.call('HMGET', rkey(id), 'state', 'claim', 'lease_until', 'attempts', 'slot',
  'slot_epoch')
if r[1] ~= 'dialing' or r[2] ~= ARG.token or (tonumber(r[3]) or 0) <= now then return {'lost'} end
if ARG.closes ~= '' and now >= tonumber(ARG.closes) then return {'closed', tostring(now)} end
local line = redis.call('HGET', rkey(id), 'agent_line')
local function hold_off(at, reason, detail)
  redis.call('HDEL', rkey(id), 'claim')
  if line and reason ~= 'agent_spacing' then  -- waits for something else: not in the line
    redis.call('ZREM', line, id)
    redis.call('HDEL', rkey(id), 'agent_line')
  end
  if reason == 'rate_limit' and ARG.asked == '1' then
    redis.call('HSET', rkey(id), 'asked_free', 1)
  else
    redis.call('HDEL', rkey(id), 'asked_free')
  end
  wait(id, 'dialing', 'scheduled', at, reason, 'waiting for ' .. reason, detail)
  return {'wait', reason, tostring(at)}
end
local spread = tonumber(ARG.spread)
for _, gate in ipairs(cjson.decode(ARG.pauses)) do
  local ends = paused_until(gate[1])
  if ends > now then return hold_off(ends + spread, gate[2], 'a fleet-wide pause') end
end
local breaker, probing = breaker_gate(id)
if breaker then
  return hold_off(breaker + spread, 'breaker', 'the platform kept failing; the fleet waits')
end
local capped = policy.number_cap > 0 and number_key(id) or nil
if capped then
  redis.call('ZREMRANGEBYSCORE', capped, '-inf', now - policy.number_window)
  if redis.call('ZCARD', capped) >= policy.number_cap then
    local oldest = tonumber(redis.call('ZRANGE', capped, 0, 0, 'WITHSCORES')[2]) or now
    return hold_off(oldest + policy.number_window + spread, 'number_cap',
      string.format('%d calls to this number in %gs (FOLLOWUP_PER_NUMBER_MAX_CALLS)',
        policy.number_cap, policy.number_window))
  end
end
replan(policy)
local interval = 1 / (rate_in_force(policy.limit) * HEADROOM)
local slot = tonumber(r[5])
-- A slot of an older epoch was given back (the breaker opened, or a cut's re-spacing could
-- not reach it): take a new one.
if slot and (r[6] or '0') ~= slot_epoch() then slot = nil end
-- Missed its slot (came back late, e.g. redelivered): take a new one. A thread's sleep
-- overshoots by a millisecond or more, so at high limits half an interval is too tight.
if slot and slot < now - math.max(interval / 2, SLOT_GRACE) then slot = nil end
if not slot then
  local akey = ns .. ':agent:' .. ARG.user
  if policy.spacing > 0 then
    -- One agent's requests go in enqueue order: each joins the agent's line (by when it was
    -- enqueued) and, while the agent is spaced, waits once, for its own turn.
    line = ns .. ':agentq:' .. ARG.user
    local placed = redis.call('HMGET', rkey(id), 'line_at', 'created_at')
    redis.call('ZADD', line, 'NX', placed[1] or placed[2] or now, id)
    redis.call('EXPIRE', line, math.ceil(MAX_WAIT) + 86400)
    redis.call('HSET', rkey(id), 'agent_line', line)
    local last = redis.call('HMGET', akey, 'at', 'id')
    local free = (tonumber(last[1]) or 0) + policy.spacing
    -- Earlier requests of theirs that are due (being dialled, waiting for their turn, or
    -- queued on this request's queue and not yet republished) go first, one spacing each.
    -- One that waits for anything else (calling hours, a retry's backoff), sits on another
    -- queue (maybe nobody consumes it), or no worker took within REDELIVER_AFTER does not
    -- hold the line: nothing holds it for ever.
    local ahead = 0
    local queue = redis.call('HGET', rkey(id), 'queue')
    for _, other in ipairs(redis.call('ZRANGE', line, 0, 49)) do
      if other == id then break end
      local o = redis.call('HMGET', rkey(other), 'state', 'waiting_for', 'queue', 'republished')
      if o[1] == 'dialing' or o[2] == 'agent_spacing' or (WAITING[o[1]] and not o[2]
          and o[3] == queue and (tonumber(o[4]) or 0) == 0) then
        ahead = ahead + 1
      end
    end
    if last[2] ~= id and (free > now or ahead > 0) then
      return hold_off(math.max(free, now) + ahead * policy.spacing + spread / 10, 'agent_spacing',
        string.format("the agent's previous follow-up was under %gs ago; %d more of theirs "
          .. 'go first', policy.spacing, ahead))
    end
  end
  slot = reserve(policy.limit, policy.burst)
  if policy.spacing > 0 then
    redis.call('HSET', akey, 'at', slot, 'id', id)
    redis.call('PEXPIRE', akey, math.ceil((slot - now + policy.spacing) * 1000) + 1000)
  end
  redis.call('HSET', rkey(id), 'slot', slot, 'slot_epoch', slot_epoch(), 'slot_user', ARG.user,
    'paced_at', now)
end
if slot - now > policy.hold then
  return hold_off(slot - policy.lead, 'rate_limit',
    string.format('the fleet-wide rate limit gave it a slot in %.1fs', slot - now))
end
fix_slot(slot)
if probing then take_probe(id, policy) end  -- its call leaves now, or after a short hold
if slot > now then return {'hold', tostring(slot - now)} end
local attempts = (tonumber(r[4]) or 0) + 1
redis.call('HSET', rkey(id), 'sent_at', now, 'attempts', attempts)
redis.call('HDEL', rkey(id), 'slot', 'slot_epoch', 'slot_user', 'asked_free', 'agent_line')
if line then redis.call('ZREM', line, id) end
local sends = sends_key(id)
if sends then
  redis.call('ZREMRANGEBYSCORE', sends, '-inf', now - 86400)
  redis.call('ZADD', sends, now, id .. ':' .. attempts)
  redis.call('EXPIRE', sends, 86400 + 60)
end
if capped then
  redis.call('ZADD', capped, now, id .. ':' .. attempts)
  redis.call('PEXPIRE', capped, math.ceil(policy.number_window * 1000) + 1000)
  redis.call('HSET', rkey(id), 'number_key', capped)
end
note(id, 'sending', nil)
return {'sent', attempts}
""",
)

# The platform answered that it did nothing (a 401: the token was refused), before the
# caller sends again with a new token: the marker is taken back and the attempt refunded,
# so a lease that runs out meanwhile is not mistaken for a call that may have been placed.
# Returns 1 if the caller still holds the claim.
UNSEND = LuaScript(
    "unsend",
    ("id", "token", "detail"),
    r"""
local id = ARG.id
local r = redis.call('HMGET', rkey(id), 'state', 'claim', 'sent_at', 'attempts')
if r[1] ~= 'dialing' or r[2] ~= ARG.token then return 0 end
if r[3] and r[3] ~= '' then
  uncap(id, tonumber(r[4]) or 0)
  redis.call('HSET', rkey(id), 'sent_at', '', 'attempts', math.max((tonumber(r[4]) or 1) - 1, 0))
  note(id, 'not processed', ARG.detail)
end
return 1
""",
)

# The send marker was written, or may have been, but the call never left: the marker could
# not be confirmed (FOLLOWUP_REDIS_WAIT_REPLICAS, WAITAOF) or the store failed at it. The
# marker is taken back, the attempt refunded and not counted against the number's cap, the
# claim released, and the request waits `delay` for `reason`. Also from 'unknown' (the lease
# ran out meanwhile and the sweeper called it so): the token shows it was this claim, and
# this claim sent nothing. Returns 1 if done, 0 if it was not (or no longer) this claim's.
WITHDRAW = LuaScript(
    "withdraw",
    ("id", "token", "delay", "reason", "detail"),
    r"""
local id = ARG.id
local r = redis.call('HMGET', rkey(id), 'state', 'claim', 'sent_at', 'attempts', 'finished')
if r[2] ~= ARG.token or r[5] == ARG.token then return 0 end
if r[1] ~= 'dialing' and r[1] ~= 'unknown' then return 0 end
if r[3] and r[3] ~= '' then
  uncap(id, tonumber(r[4]) or 0)
  redis.call('HSET', rkey(id), 'sent_at', '', 'attempts', math.max((tonumber(r[4]) or 1) - 1, 0))
  note(id, 'not sent', ARG.detail)
end
if r[1] == 'unknown' then
  keep(id)
  redis.call('HDEL', rkey(id), 'last_error', 'unknown_at', 'lookups', 'last_lookup_at')
end
redis.call('HDEL', rkey(id), 'claim')
wait(id, r[1], 'scheduled', now + tonumber(ARG.delay), ARG.reason, 'waiting for ' .. ARG.reason,
  ARG.detail)
return 1
""",
)

# Returns {ok, state, breaker event ('opened' | 'reopened' | 'closed' | ''), the rate in force
# if a 429 lowered it, else ''}. Only the holder of the claim may finish; a late answer may
# also settle an 'unknown'. Running it again after it landed (its reply was lost in an
# outage) is a no-op that reports success. fields: a JSON object of record fields to set
# ('' or null deletes). pause > 0 (the API's Retry-After) pauses every worker's claims that
# long. A retry waits as `waiting` says (api_pause, retry_backoff). spent = 0 refunds the
# attempt (the platform did nothing with it); slow = 1 (a 429) lowers the fleet's rate;
# health ('ok' | 'failure' | '') is what the answer tells the breaker.
FINISH = LuaScript(
    "finish",
    (
        "id",
        "token",
        "state",
        "fields",
        "event",
        "detail",
        "due_in",
        "pause",
        "waiting",
        "spent",
        "slow",
        "health",
        "policy",
    ),
    r"""
local id, new = ARG.id, ARG.state
local r = redis.call('HMGET', rkey(id), 'state', 'claim', 'finished', 'attempts', 'sent_at',
  'paced_at')
if r[2] == ARG.token and r[3] == ARG.token then return {1, r[1], '', ''} end
if (r[1] ~= 'dialing' and r[1] ~= 'unknown') or r[2] ~= ARG.token then
  return {0, r[1] or '', '', ''}
end
-- A late answer that is itself unknown (the stalled worker's read timeout) on a request the
-- sweeper already made unknown tells nothing new: a history note, and no second count,
-- stream entry or restart of its lookups.
if r[1] == 'unknown' and new == 'unknown' then
  note_again(id, 'late answer: ' .. ARG.event, ARG.detail)  -- run again: no second note
  return {1, new, '', ''}
end
local policy = cjson.decode(ARG.policy)
if ARG.spent == '0' and r[5] and r[5] ~= '' then
  uncap(id, tonumber(r[4]) or 0)
  redis.call('HSET', rkey(id), 'attempts', math.max((tonumber(r[4]) or 1) - 1, 0))
end
local rate = ''
if ARG.slow == '1' then
  local cut = slow_down(policy, tonumber(r[6]) or tonumber(r[5]))
  rate = cut and tostring(cut) or ''
end
local breaker = breaker_heard(id, ARG.health, policy)
for k, v in pairs(cjson.decode(ARG.fields)) do
  if v == cjson.null or v == '' then redis.call('HDEL', rkey(id), k)
  else redis.call('HSET', rkey(id), k, v) end
end
redis.call('HSET', rkey(id), 'finished', ARG.token)
redis.call('HDEL', rkey(id), 'lease_until')
local cid = redis.call('HGET', rkey(id), 'conversation_id')
if cid and cid ~= '' then redis.call('SET', ns .. ':conv:' .. cid, id, 'EX', TTL) end
if (tonumber(ARG.pause) or 0) > 0 then pause('api', tonumber(ARG.pause)) end
if TERMINAL[new] then
  move(id, r[1], new)
  note(id, ARG.event, ARG.detail)
  settle(id)
else
  keep(id)  -- a late answer can move an 'unknown' back to pending
  wait(id, r[1], new, now + tonumber(ARG.due_in), ARG.waiting, ARG.event, ARG.detail)
end
return {1, new, breaker, rate}
""",
)

# Before anything was sent, the request must wait (a gate said so: the credentials were
# refused, ...). Only the claim's holder may defer, and only with no send marker. With
# pause_s > 0 the named fleet-wide pause is set too. Spends no attempt. Returns 1 if done.
DEFER = LuaScript(
    "defer",
    (
        "id",
        "token",
        "delay",
        "reason",
        "detail",
        "last_error",
        "pause_name",
        "pause_s",
        "fields",
    ),
    r"""
local id = ARG.id
local r = redis.call('HMGET', rkey(id), 'state', 'claim', 'sent_at')
if r[1] ~= 'dialing' or r[2] ~= ARG.token or (r[3] and r[3] ~= '') then return 0 end
for k, v in pairs(cjson.decode(ARG.fields)) do redis.call('HSET', rkey(id), k, v) end
if (tonumber(ARG.pause_s) or 0) > 0 then pause(ARG.pause_name, tonumber(ARG.pause_s)) end
if ARG.last_error ~= '' then redis.call('HSET', rkey(id), 'last_error', ARG.last_error) end
redis.call('HDEL', rkey(id), 'claim')
wait(id, 'dialing', 'scheduled', now + tonumber(ARG.delay), ARG.reason,
  'waiting for ' .. ARG.reason, ARG.detail)
return 1
""",
)

# A fleet-wide pause is over before its time (a token was granted again): end it, and make
# what waited for it due now. Returns how many requests were brought forward.
LIFT = LuaScript(
    "lift",
    ("pause_name", "reason"),
    r"""
if redis.call('DEL', ns .. ':pause:' .. ARG.pause_name) == 0 then return 0 end
local waiting = redis.call('ZRANGE', ns .. ':waiting:' .. ARG.reason, 0, 999)
for _, id in ipairs(waiting) do
  redis.call('ZADD', DUE, now, id)
  redis.call('HSET', rkey(id), 'next_attempt_at', now)
end
return #waiting
""",
)

# `unknown` requests due for a lookup at the platform (lookup n is due `after` x 2^n seconds
# after the request became unknown); each taken one is pushed back by `lease` so no other
# reconciler takes it meanwhile. Returns a flat list: id, request, sent_at, lookups,
# failed lookups, ...
TAKE_LOOKUPS = LuaScript(
    "take_lookups",
    ("limit", "after", "lease"),
    r"""
local out, RKEY = {}, ns .. ':reconcile'
for _, id in ipairs(redis.call('ZRANGEBYSCORE', RKEY, '-inf', now, 'LIMIT', 0,
    tonumber(ARG.limit))) do
  local r = redis.call('HMGET', rkey(id), 'state', 'request', 'sent_at', 'lookups', 'unknown_at',
    'lookup_failures', 'last_lookup_at', 'lookups_since', 'conversation_id')
  if r[1] ~= 'unknown' and not (r[1] == 'placed' and (not r[9] or r[9] == '')) then
    redis.call('ZREM', RKEY, id)
  else
    -- Lookup 0 goes `after` after the request became unknown (or was placed without a call
    -- id); lookup n, after·2^(n-1) after lookup n-1 was made (the same times when nothing is
    -- in the way), so that a throttle or an outage that outlasts the schedule does not spend
    -- the rest back to back.
    local lookups, after = tonumber(r[4]) or 0, tonumber(ARG.after)
    local since = tonumber(r[5]) or tonumber(r[8]) or now
    local due = since + after
    if lookups > 0 and tonumber(r[7]) then
      due = tonumber(r[7]) + after * math.pow(2, math.min(lookups - 1, 10))
    elseif lookups > 0 then
      due = since + after * math.pow(2, math.min(lookups, 10))
    end
    if due > now then
      redis.call('ZADD', RKEY, due, id)
    else
      redis.call('ZADD', RKEY, now + tonumber(ARG.lease), id)
      for _, v in ipairs({id, r[2], r[3], tostring(lookups), tostring(tonumber(r[6]) or 0)}) do
        table.insert(out, v)
      end
    end
  end
end
return out
""",
)

# A lookup's answer for an `unknown` request. A conversation id settles it `placed` ("settled
# by lookup"), unless another request holds that id (ns:conv:<id>, written with every
# conversation id a request gets): then, as with no match, the lookup is noted, and with
# last = 1 the lookups end (it stays unknown for a person). retry_in > 0: the platform gave
# no usable answer (a throttle, an outage, an odd body): no lookup is spent, the next one
# goes retry_in seconds later, and after max_failures of them in all the lookups end;
# slow = 1 (a 429) lowers the fleet's rate. Returns the state after, or '' if it was no
# longer unknown.
RECONCILE = LuaScript(
    "reconcile",
    (
        *("id", "conversation_id", "detail", "last", "retry_in", "slow", "max_failures"),
        *("policy", "asked_at"),
    ),
    r"""
local id, detail, RKEY = ARG.id, ARG.detail, ns .. ':reconcile'
local state = redis.call('HGET', rkey(id), 'state')
local known = redis.call('HGET', rkey(id), 'conversation_id')
-- A placed request without a call id is looked up only to fill the id: its state stays.
local id_only = state == 'placed' and (not known or known == '')
if state ~= 'unknown' and not id_only then return '' end
local function over(why)
  redis.call('ZREM', RKEY, id)
  if id_only then note(id, 'lookups over', why .. '; the call id stays empty')
  else note(id, 'lookups over', why .. '; a person decides (followup retry ID)') end
end
if (tonumber(ARG.retry_in) or 0) > 0 then
  if ARG.slow == '1' then slow_down(cjson.decode(ARG.policy), tonumber(ARG.asked_at)) end
  local failures = redis.call('HINCRBY', rkey(id), 'lookup_failures', 1)
  note(id, 'lookup failed', detail)
  if failures >= tonumber(ARG.max_failures) then
    over(string.format('the platform gave no usable answer %d times', failures))
  else
    redis.call('ZADD', RKEY, now + tonumber(ARG.retry_in), id)
  end
  return state
end
local cid = ARG.conversation_id
if cid ~= '' then
  local holder = redis.call('GET', ns .. ':conv:' .. cid)
  if holder and holder ~= id then
    detail = 'the platform has conversation ' .. cid .. ', but request ' .. holder ..
      ' holds it: not this one'
  elseif id_only then
    redis.call('HSET', rkey(id), 'conversation_id', cid)
    redis.call('SET', ns .. ':conv:' .. cid, id, 'EX', TTL)
    redis.call('ZREM', RKEY, id)
    note(id, 'call id found by lookup', detail)
    return 'placed'
  else
    redis.call('HSET', rkey(id), 'conversation_id', cid)
    redis.call('SET', ns .. ':conv:' .. cid, id, 'EX', TTL)
    redis.call('HDEL', rkey(id), 'last_error')
    move(id, 'unknown', 'placed')
    note(id, 'settled by lookup', detail)
    settle(id)
    redis.call('HINCRBY', ns .. ':counts', 'settled_by_lookup', 1)
    redis.call('HINCRBY', ns .. ':stats:' .. math.floor(now / 60), 'settled_by_lookup', 1)
    return 'placed'
  end
end
redis.call('HINCRBY', rkey(id), 'lookups', 1)
redis.call('HSET', rkey(id), 'last_lookup_at', now)
note(id, 'looked up', detail)
if ARG.last == '1' then
  over('no call found')
else
  redis.call('ZADD', RKEY, now, id)  -- TAKE_LOOKUPS files it under its next time
end
return state
""",
)

# A lookup that could not be asked (no token to ask with): it goes again `delay` seconds
# later, spending nothing (neither a lookup nor one of its failures).
LOOKUP_LATER = LuaScript(
    "lookup_later",
    ("id", "delay"),
    r"""
if redis.call('HGET', rkey(ARG.id), 'state') ~= 'unknown' then return 0 end
redis.call('ZADD', ns .. ':reconcile', 'XX', now + tonumber(ARG.delay), ARG.id)
return 1
""",
)

# A slot of the fleet's rate limit was not enough: the platform answered a question (a busy
# check) with 429. Lowers the fleet's rate as a call's 429 does (asked_at: the store's clock
# when the question went, its slot; once a round trip); returns the rate in force.
SLOW_DOWN = LuaScript(
    "slow_down",
    ("policy", "asked_at"),
    r"""
local policy = cjson.decode(ARG.policy)
return tostring(slow_down(policy, tonumber(ARG.asked_at)) or rate_in_force(policy.limit))
""",
)

# One slot of the fleet's rate limit for a request that is not a call (a lookup): the
# seconds to wait for it (0: take it now) and the slot (the store's clock; '' when not
# reserved). Only reserved if it is within `hold` seconds.
TAKE_SLOT = LuaScript(
    "take_slot",
    ("policy",),
    r"""
local policy = cjson.decode(ARG.policy)
replan(policy)
local interval = 1 / (rate_in_force(policy.limit) * HEADROOM)
local tat = math.max(tonumber(redis.call('HGET', LIMITER, 'tat') or '0') or 0, now)
local slot = math.max(now, tat - (policy.burst - 1) * interval)
if slot - now > policy.hold then return {tostring(slot - now), ''} end
local reserved = reserve(policy.limit, policy.burst)
fix_slot(reserved)
return {tostring(reserved - now), string.format('%.6f', reserved)}
""",
)

# A person's action. action: 'cancel' | 'retry'. Returns {ok, state}.
MANUAL = LuaScript(
    "manual",
    ("id", "action", "who"),
    r"""
local id = ARG.id
local state = redis.call('HGET', rkey(id), 'state')
if not state then return {0, ''} end
if ARG.action == 'cancel' then
  if not WAITING[state] then return {0, state} end
  move(id, state, 'cancelled')
  note(id, 'cancelled', 'by ' .. ARG.who)
  settle(id)
  return {1, 'cancelled'}
end
if state ~= 'unknown' and state ~= 'failed' then return {0, state} end
local previous = redis.call('HGET', rkey(id), 'attempts')
keep(id)
redis.call('HDEL', rkey(id), 'claim', 'sent_at', 'lease_until', 'finished', 'slot', 'paced_at',
  'not_after')
local not_before = tonumber(redis.call('HGET', rkey(id), 'not_before')) or now
-- The attempts made stay counted (the history, the per-number cap's entries); the retry
-- gets a fresh budget of FOLLOWUP_MAX_ATTEMPTS counted from here.
redis.call('HSET', rkey(id), 'attempts_base', tonumber(previous) or 0, 'next_attempt_at', now,
  'republished', 0, 'give_up_at', math.max(now, not_before) + MAX_WAIT)
move(id, state, 'retrying')
note(id, 'manual retry', 'by ' .. ARG.who .. ' after ' .. state .. ' (' .. previous .. ' attempts)')
redis.call('ZADD', DUE, now, id)
return {1, 'retrying'}
""",
)

# Returns a flat list: id, state, queue, request, taken, ... Each entry taken is held for
# `hold` seconds (its due time then: `taken`), so that concurrent sweepers never both take it;
# the sweeper publishes, then says what became of each (PUBLISHED), which moves its due time.
# It also trims the indices of records past their retention (they expire on their own).
TAKE_DUE = LuaScript(
    "take_due",
    ("limit", "hold"),
    r"""
-- A finished record expires TTL after it finished, which is its score in its state's index.
-- ('unknown' is kept until a person acts, so its index is left alone.)
for state, _ in pairs(TERMINAL) do
  local index = ns .. ':state:' .. state
  if state ~= 'unknown' then
    for _, gone in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now - TTL, 'LIMIT', 0, 500)) do
      redis.call('ZREM', index, gone)
      redis.call('ZREM', ns .. ':all', gone)
    end
  end
end
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', DUE, '-inf', now, 'LIMIT', 0,
    tonumber(ARG.limit))) do
  local r = redis.call('HMGET', rkey(id), 'state', 'queue', 'request')
  if not r[1] or TERMINAL[r[1]] then
    redis.call('ZREM', DUE, id)
  else
    redis.call('ZADD', DUE, now + tonumber(ARG.hold), id)
    local taken = redis.call('ZSCORE', DUE, id)
    for _, v in ipairs({id, r[1], r[2], r[3], taken}) do table.insert(out, v) end
  end
end
return out
""",
)

# What became of the requests TAKE_DUE gave the sweeper (EACH: id, taken, published). Only
# an entry still as it was taken (its due time `taken`: no worker claimed it meanwhile) is
# moved. Published: if no worker claims it within a growing step (a message stuck in a long
# queue is not republished over and over), it is published again. Not published (the broker
# is down): it is due now, for the next sweep, and nothing is counted, so a broker outage
# costs its own length. Returns how many entries were moved.
PUBLISHED = LuaScript(
    "published",
    (),
    r"""
local moved = 0
for _, e in ipairs(EACH) do
  if redis.call('ZSCORE', DUE, e.id) == e.taken then
    moved = moved + 1
    if e.published == '1' then
      local n = tonumber(redis.call('HGET', rkey(e.id), 'republished')) or 0
      redis.call('ZADD', DUE, now + REDELIVER_AFTER * math.pow(2, math.min(n, 4)), e.id)
      redis.call('HSET', rkey(e.id), 'republished', n + 1)
    else
      redis.call('ZADD', DUE, now, e.id)
    end
  end
end
return moved
""",
    each=("id", "taken", "published"),
)

SCRIPTS = (
    REGISTER,
    REGISTER_MANY,
    CLAIM,
    SEND,
    UNSEND,
    WITHDRAW,
    FINISH,
    DEFER,
    LIFT,
    MANUAL,
    TAKE_DUE,
    PUBLISHED,
    TAKE_LOOKUPS,
    RECONCILE,
    LOOKUP_LATER,
    TAKE_SLOT,
    SLOW_DOWN,
)
