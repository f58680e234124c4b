"""The outcome stream, as producers read it with `followup.outcomes()`: no entry is handed to
two live consumers, and none vanishes unannounced when the stream is trimmed (Redis 7.0+;
the entries are written as the store's Lua writes them)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import structlog

from followup.cli.main import _outcome_line
from followup.config.settings import Settings, load_settings
from followup.tasks.outcomes import Outcome, outcomes
from followup.worker import stats
from followup.worker.store import StatusStore

pytestmark = pytest.mark.integration


@pytest.fixture
def own(env: dict[str, str]) -> Iterator[tuple[Settings, StatusStore]]:
    settings = load_settings(
        {**env, "FOLLOWUP_NAMESPACE": f"{env['FOLLOWUP_NAMESPACE']}-os-{uuid.uuid4().hex[:6]}"}
    )
    store = StatusStore.from_settings(settings)
    yield settings, store
    store.redis.close()


def _write(store: StatusStore, n: int) -> list[str]:
    """n outcomes, as the store's record_outcome writes them."""
    return [
        str(
            store.redis.xadd(
                f"{store.ns}:outcomes",
                {
                    "request_id": f"r-{i}-{uuid.uuid4().hex[:6]}",
                    "state": "placed",
                    "conversation_id": "",
                    "code": "",
                    "idempotency_key": "",
                    "contact_id": "",
                    "at": str(time.time()),
                },
            )
        )
        for i in range(n)
    ]


def test_two_live_consumers_never_handle_one_outcome_twice(
    own: tuple[Settings, StatusStore],
) -> None:
    settings, store = own
    handled: list[tuple[str, str]] = []
    lock = threading.Lock()
    store.redis.xgroup_create(f"{store.ns}:outcomes", "crm", id="0", mkstream=True)
    _write(store, 20)

    def consume(name: str) -> None:
        for outcome in outcomes(
            "crm", name, settings=settings, claim_idle_s=2, block_s=0.5, idle_timeout_s=4
        ):
            with lock:
                handled.append((name, outcome.request_id))
            time.sleep(0.2)  # a CRM update: 20 of them take longer than claim_idle_s

    threads = [threading.Thread(target=consume, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    twice = [r for r, n in Counter(r for _, r in handled).items() if n > 1]
    assert twice == [], handled
    assert len(handled) == 20


def _read(stream: Iterator[Outcome], n: int) -> list[Outcome]:
    return [next(stream) for _ in range(n)]


def test_entries_trimmed_from_a_dead_consumers_pending_list_are_announced(
    own: tuple[Settings, StatusStore],
) -> None:
    settings, store = own
    key = f"{store.ns}:outcomes"
    store.redis.xgroup_create(key, "crm", id="0", mkstream=True)
    first = _write(store, 6)
    dead = outcomes("crm", "dead", settings=settings, count=5, claim_idle_s=0.2, block_s=0.2)
    _read(dead, 1)  # it holds 5 (the first one too: its handler never came back), then dies
    store.redis.xtrim(key, maxlen=0)  # FOLLOWUP_OUTCOMES_MAXLEN's trim, while it is gone
    later = _write(store, 2)
    time.sleep(0.3)  # past claim_idle_s

    with structlog.testing.capture_logs() as logs:
        got = list(
            outcomes("crm", "b", settings=settings, claim_idle_s=0.2, block_s=0.2, idle_timeout_s=1)
        )
    lost = [o for o in got if o.state == "lost"]
    # The five it held, each by its id; then the sixth, never delivered to anyone (trimmed
    # before any consumer read it), as one gap: after the fifth, before the first kept.
    assert [o.entry_id for o in lost] == [*first[:5], f"{first[4]}..{later[0]}"]
    assert [o.count for o in lost] == [1, 1, 1, 1, 1, 1]
    assert all(o.code == "outcome.trimmed" and o.request_id == "" and o.at > 0 for o in lost)
    assert [o.entry_id for o in got if o.state == "placed"] == later
    assert stats.read(store, stats.now(store)).outcomes_lost == {"crm": 6}
    assert any("lost to trimming" in e["event"] and e["count"] == 5 for e in logs), logs
    assert any(e.get("after") == first[4] and e["count"] == 1 for e in logs), logs


def test_outcomes_trimmed_before_the_group_read_them_come_as_one_lost_gap(
    own: tuple[Settings, StatusStore],
) -> None:
    """A consumer handles 5 and goes down; 400 are written to a stream kept to 100: it comes
    back to what is left, and one `lost` outcome counts the rest, once."""
    settings, store = own
    key = f"{store.ns}:outcomes"
    store.redis.xgroup_create(key, "crm", id="0", mkstream=True)
    first = _write(store, 5)
    assert [
        o.entry_id for o in outcomes("crm", "a", settings=settings, block_s=0.2, idle_timeout_s=1)
    ] == (first)
    written = _write(store, 400)
    store.redis.xtrim(key, maxlen=100)  # FOLLOWUP_OUTCOMES_MAXLEN=100
    kept = [str(i) for i, _ in store.redis.xrange(key)]

    with structlog.testing.capture_logs() as logs:
        got = list(outcomes("crm", "a", settings=settings, block_s=0.2, idle_timeout_s=1))
    assert [(o.state, o.entry_id, o.count) for o in got[:1]] == [
        ("lost", f"{first[-1]}..{kept[0]}", len(written) - len(kept))  # the 300 trimmed
    ]
    assert [o.entry_id for o in got[1:]] == kept
    gone = len(written) - len(kept)  # about 300 (the trim is approximate)
    assert stats.read(store, stats.now(store)).outcomes_lost == {"crm": gone}
    assert [e["count"] for e in logs if "lost to trimming" in e["event"]] == [gone]
    # announced once: read again, nothing more
    assert list(outcomes("crm", "b", settings=settings, block_s=0.2, idle_timeout_s=1)) == []

    line = _outcome_line(got[0])  # `followup outcomes --group crm`: the gap, and when found
    assert f"{first[-1]}..{kept[0]}" in line and f"{gone} trimmed" in line, line
    assert not line.startswith("1970"), line


def test_a_consumers_own_pending_entries_that_were_trimmed_come_as_lost_not_blank(
    own: tuple[Settings, StatusStore],
) -> None:
    settings, store = own
    key = f"{store.ns}:outcomes"
    store.redis.xgroup_create(key, "crm", id="0", mkstream=True)
    ids = _write(store, 3)
    crashed = outcomes("crm", "a", settings=settings, count=3, block_s=0.2)
    _read(crashed, 1)  # holds all 3, then crashes
    store.redis.xtrim(key, maxlen=0)
    again = list(outcomes("crm", "a", settings=settings, block_s=0.2, idle_timeout_s=1))
    assert [(o.entry_id, o.state) for o in again] == [(i, "lost") for i in ids]


def test_the_idle_timeout_counts_from_the_last_outcome_handed_not_the_last_fetch(
    own: tuple[Settings, StatusStore],
) -> None:
    """Handling a batch longer than idle_timeout_s is not idleness: what waits is read on."""
    settings, store = own
    store.redis.xgroup_create(f"{store.ns}:outcomes", "crm", id="0", mkstream=True)
    written = _write(store, 20)
    handled = []
    for outcome in outcomes("crm", "a", settings=settings, count=10, block_s=0.2, idle_timeout_s=2):
        handled.append(outcome.entry_id)
        time.sleep(0.3)  # a batch of 10 takes longer than idle_timeout_s
    assert handled == written
