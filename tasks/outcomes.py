"""The outcome stream, for producers: every terminal transition of every request, so a CRM
can update its ticket without polling each request.

The stream is the Redis Stream `{FOLLOWUP_NAMESPACE}:outcomes`, trimmed to about
FOLLOWUP_OUTCOMES_MAXLEN entries; each entry is written in the same Lua script as the
transition it reports, so neither exists without the other. Its fields (all strings):
`request_id`, `state` (placed, failed, unknown, cancelled, rejected; an `unknown` later
settled gets a second entry), `conversation_id`, `code` (the error's, if any),
`idempotency_key`, `contact_id`, `at` (Unix seconds). Never the phone number.

A service in any language reads it with a consumer group:
    XGROUP CREATE followup:outcomes crm $ MKSTREAM
    XREADGROUP GROUP crm crm-1 COUNT 100 BLOCK 5000 STREAMS followup:outcomes >
    ... handle each entry, then: XACK followup:outcomes crm <entry id>
    XAUTOCLAIM followup:outcomes crm crm-1 60000 0   (entries a dead consumer left)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from followup.config.settings import Settings, load_settings
from followup.worker.store import StatusStore


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
    count: int = 100,
    block_s: float = 5.0,
    claim_idle_s: float = 60.0,
    idle_timeout_s: float | None = None,
) -> Iterator[Outcome]:
    """Outcomes for one consumer of a consumer group, each acknowledged once the caller's
    code has handled it (when the loop asks for the next), so a producer that crashes
    mid-batch sees the rest again: first its own unacknowledged ones, then, after
    claim_idle_s, those a dead consumer of the group left. A new group starts at `start`
    ('$': outcomes from now on; '0': all the stream holds). Stops after idle_timeout_s with
    nothing new (None: never).

    Examples:
        >>> for outcome in followup.outcomes(group="crm", consumer="crm-1"):
        ...     crm.update_ticket(outcome.idempotency_key, outcome.state)
    """
    store = StatusStore.from_settings(settings or load_settings())
    client, stream = store.redis, f"{store.ns}:outcomes"
    try:
        client.xgroup_create(stream, group, id=start, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    own = "0"  # this consumer's own pending entries first (it may have crashed before)
    quiet_since = time.monotonic()
    while idle_timeout_s is None or time.monotonic() - quiet_since < idle_timeout_s:
        entries = _pending_of_the_dead(client, stream, group, consumer, claim_idle_s, count)
        if not entries:
            reply = client.xreadgroup(
                group, consumer, {stream: own or ">"}, count=count, block=int(block_s * 1000)
            )
            entries = _entries(reply)
            if own and not entries:
                own = ""  # caught up with our own: now new ones
                continue
        if entries:
            quiet_since = time.monotonic()
        for entry_id, fields in entries:
            yield Outcome.from_entry(entry_id, fields)
            client.xack(stream, group, entry_id)
    client.close()


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
    client: redis.Redis, stream: str, group: str, consumer: str, idle_s: float, count: int
) -> list[tuple[str, dict[str, str]]]:
    reply = cast(
        list[Any],
        client.xautoclaim(stream, group, consumer, int(idle_s * 1000), "0-0", count=count),
    )
    return [(entry_id, fields) for entry_id, fields in reply[1] if fields]


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    return [(entry_id, fields) for _, batch in reply or [] for entry_id, fields in batch]
