"""The outcome stream, for producers: every terminal transition of every request, so a CRM
can update its ticket without polling each request.

The stream is the Redis Stream `{FOLLOWUP_NAMESPACE}:outcomes`, trimmed to about
FOLLOWUP_OUTCOMES_MAXLEN entries; each entry is written in the same Lua script as the
transition it reports, so neither exists without the other. Its fields (all strings):
`request_id`, `state` (placed, failed, unknown, cancelled, rejected; an `unknown` later
settled gets a second entry; `outcomes()` adds `lost` for an entry trimmed before it was
handled), `conversation_id`, `code` (the error's, if any),
`idempotency_key`, `contact_id`, `at` (Unix seconds). Never the phone number.

A service in any language reads it with a consumer group:
    XGROUP CREATE followup:outcomes crm $ MKSTREAM
    XREADGROUP GROUP crm crm-1 COUNT 100 BLOCK 5000 STREAMS followup:outcomes >
    ... handle each entry, then: XACK followup:outcomes crm <entry id>
    XAUTOCLAIM followup:outcomes crm crm-1 60000 0   (entries a dead consumer left; its
        third answer lists entries the stream dropped before they were handled: Redis 7.0+)
    XINFO GROUPS followup:outcomes   (lag above XLEN: that many trimmed before the group
        read them)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis
import structlog

from followup.config.settings import Settings, load_settings
from followup.worker.store import StatusStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Outcome:
    entry_id: str
    request_id: str
    state: str
    conversation_id: str | None
    code: str | None
    idempotency_key: str | None
    contact_id: str | None
    at: float
    count: int = 1  # entries this outcome stands for: a `lost` gap may stand for many

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> Outcome:
        return cls(
            entry_id=entry_id,
            request_id=fields.get("request_id", ""),
            state=fields.get("state", ""),
            conversation_id=fields.get("conversation_id") or None,
            code=fields.get("code") or None,
            idempotency_key=fields.get("idempotency_key") or None,
            contact_id=fields.get("contact_id") or None,
            at=float(fields.get("at") or 0),
        )


def outcomes(
    group: str,
    consumer: str,
    *,
    settings: Settings | None = None,
    start: str = "$",
    count: int = 10,
    block_s: float = 5.0,
    claim_idle_s: float = 60.0,
    idle_timeout_s: float | None = None,
) -> Iterator[Outcome]:
    """Outcomes for one consumer of a consumer group, each acknowledged once the caller's
    code has handled it (when the loop asks for the next), so a producer that crashes
    mid-batch sees the rest again: first its own unacknowledged ones, then, after
    claim_idle_s, those a dead consumer of the group left. A new group starts at `start`
    ('$': outcomes from now on; '0': all the stream holds). Stops after idle_timeout_s with
    nothing new, counted from the last outcome handed over (None: never).

    Each entry is handed over only while this consumer owns it, and its idle time starts
    again as it is handed over (`_OWN`): another consumer takes it over only if handling that
    one outcome takes longer than claim_idle_s. Entries are read `count` at a time.

    An entry the stream dropped (trimmed to FOLLOWUP_OUTCOMES_MAXLEN) before it was handled
    is never skipped in silence: it comes as an Outcome with state `lost` and its entry id
    (its request is not known any more), is counted in the store (`followup stats`:
    `outcomes_lost`), and logged. Entries trimmed before the group ever read them come as
    ONE `lost` outcome for the gap: `count` says how many, `entry_id` is
    `<after>..<before>` (lost are those strictly between), `at` when it was found.

    Warning:
        At least once: an outcome whose handling outlives claim_idle_s, or whose handler
        crashes before the next is asked for, is handed over again. `entry_id` is stable:
        dedupe on it (or on request_id and state) where twice matters.

    Examples:
        >>> for outcome in followup.outcomes(group="crm", consumer="crm-1"):
        ...     if outcome.state != "lost":
        ...         crm.update_ticket(outcome.idempotency_key, outcome.state)
    """
    store = StatusStore.from_settings(settings or load_settings())
    client, stream = store.redis, f"{store.ns}:outcomes"
    try:
        client.xgroup_create(stream, group, id=start, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    own, gap_of = client.register_script(_OWN), client.register_script(_GAP)
    idle_ms = int(claim_idle_s * 1000)
    mine = "0"  # this consumer's own pending entries first (it may have crashed before)
    quiet_since = time.monotonic()
    while idle_timeout_s is None or time.monotonic() - quiet_since < idle_timeout_s:
        entries, lost = _pending_of_the_dead(client, stream, group, consumer, idle_ms, count)
        if not entries and not lost and not mine:
            gap = cast(list[Any], gap_of(keys=[stream], args=[group]))
            if gap:
                yield _gap(store, group, int(gap[0]), str(gap[1]), str(gap[2]))
                quiet_since = time.monotonic()
                continue
        if not entries and not lost:
            reply = client.xreadgroup(
                group, consumer, {stream: mine or ">"}, count=count, block=int(block_s * 1000)
            )
            entries = _entries(reply)
            # A deleted entry in our own pending list reads as an id without fields.
            lost = [entry_id for entry_id, fields in entries if entry_id and not fields]
            entries = [(entry_id, fields) for entry_id, fields in entries if entry_id and fields]
            if mine and not entries and not lost:
                mine = ""  # caught up with our own: now new ones
                continue
            if mine and entries:
                mine = entries[-1][0]  # read on past these
        if entries or lost:
            quiet_since = time.monotonic()
        if lost:
            client.xack(stream, group, *lost)  # deleted: nothing to hand over again
            for trimmed in _lost(store, group, lost):
                yield trimmed
                quiet_since = time.monotonic()
        for entry_id, fields in entries:
            if not own(keys=[stream], args=[group, entry_id, consumer]):
                continue  # another consumer took it over meanwhile: it is theirs now
            yield Outcome.from_entry(entry_id, fields)
            client.xack(stream, group, entry_id)
            quiet_since = time.monotonic()  # handling a batch is not idleness
    client.close()


# Hand an entry over only if this consumer still owns it, and start its idle time again, so
# no other consumer's XAUTOCLAIM takes it while it is handled. KEYS: the stream; ARGV:
# group, entry id, consumer. Returns 1 if owned.
_OWN = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', 0, ARGV[2], ARGV[2], 1, ARGV[3])
if #p == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""


# Entries trimmed before the group ever read them are nobody's pending entries: only the
# group's counters tell them (Redis 7.0: entries-added - entries-read - the stream's length).
# Finds such a gap and moves the group past it in one step (two consumers of a group never
# both announce it). KEYS: the stream; ARGV: group. Returns {} or {how many, the last id the
# group read, the first id still in the stream}: lost are those strictly between.
_GAP = """
local function map(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local group
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  g = map(g)
  if g['name'] == ARGV[1] then group = g end
end
if not group then return {} end
local s = map(redis.call('XINFO', 'STREAM', KEYS[1]))
local length, added = tonumber(s['length']), tonumber(s['entries-added'])
local lag, read = tonumber(group['lag']), tonumber(group['entries-read'])
if not lag and read then lag = added - read end
if not lag or lag <= length then return {} end  -- nothing missing (or Redis cannot tell)
local before, upto
if length > 0 then
  before = s['first-entry'][1]
  local ms, seq = string.match(before, '^(%d+)-(%d+)$')
  if seq == '0' then upto = string.format('%d-18446744073709551615', tonumber(ms) - 1)
  else upto = string.format('%d-%d', tonumber(ms), tonumber(seq) - 1) end
else
  upto = s['last-generated-id']
  local ms, seq = string.match(upto, '^(%d+)-(%d+)$')
  before = string.format('%d-%d', tonumber(ms), tonumber(seq) + 1)
end
local after = group['last-delivered-id']
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], upto, 'ENTRIESREAD', added - length)
return {lag - length, after, before}
"""


def _gap(store: StatusStore, group: str, count: int, after: str, before: str) -> Outcome:
    """Entries trimmed before this group read them: counted, logged, and handed over as one
    `lost` outcome naming the gap (the entries after `after` and before `before`)."""
    store.redis.hincrby(f"{store.ns}:outcomes:lost", group, count)
    log.warning(
        "outcomes lost to trimming: the stream dropped them before the group read them; "
        "raise FOLLOWUP_OUTCOMES_MAXLEN or consume sooner",
        group=group,
        count=count,
        after=after,
        before=before,
    )
    return Outcome(
        f"{after}..{before}",
        "",
        "lost",
        None,
        "outcome.trimmed",
        None,
        None,
        time.time(),
        count,
    )


def _lost(store: StatusStore, group: str, entry_ids: list[str]) -> Iterator[Outcome]:
    """Entries trimmed from the stream before this group handled them: counted, logged,
    and handed over as `lost` outcomes naming each entry."""
    store.redis.hincrby(f"{store.ns}:outcomes:lost", group, len(entry_ids))
    log.warning(
        "outcomes lost to trimming: the stream dropped them before they were handled; "
        "raise FOLLOWUP_OUTCOMES_MAXLEN or consume sooner",
        group=group,
        count=len(entry_ids),
        first=entry_ids[0],
        last=entry_ids[-1],
    )
    for entry_id in entry_ids:
        yield Outcome(entry_id, "", "lost", None, "outcome.trimmed", None, None, time.time())


def recent(settings: Settings, count: int = 20) -> list[Outcome]:
    """The last `count` outcomes, newest last (no consumer group, nothing acknowledged)."""
    store = StatusStore.from_settings(settings)
    entries = cast(list[Any], store.redis.xrevrange(f"{store.ns}:outcomes", count=count))
    store.redis.close()
    return [Outcome.from_entry(i, f) for i, f in reversed(entries)]


def follow(settings: Settings, block_s: float = 5.0) -> Iterator[Outcome]:
    """New outcomes as they come, for a person watching (no consumer group)."""
    store = StatusStore.from_settings(settings)
    stream, last = f"{store.ns}:outcomes", "$"
    while True:
        for entry_id, fields in _entries(
            store.redis.xread({stream: last}, count=100, block=int(block_s * 1000))
        ):
            last = entry_id
            yield Outcome.from_entry(entry_id, fields)


def _pending_of_the_dead(
    client: redis.Redis, stream: str, group: str, consumer: str, idle_ms: int, count: int
) -> tuple[list[tuple[str, dict[str, str]]], list[str]]:
    """Entries a dead consumer left (idle past idle_ms), now this consumer's, and the ids of
    those the stream dropped meanwhile (Redis 7: XAUTOCLAIM's third answer)."""
    reply = cast(list[Any], client.xautoclaim(stream, group, consumer, idle_ms, "0-0", count=count))
    entries = [(entry_id, fields) for entry_id, fields in reply[1] if entry_id and fields]
    gone = [entry_id for entry_id, fields in reply[1] if entry_id and not fields]
    deleted = [str(i) for i in (reply[2] if len(reply) > 2 else [])]
    return entries, gone + deleted


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    return [(entry_id, fields) for _, batch in reply or [] for entry_id, fields in batch]
