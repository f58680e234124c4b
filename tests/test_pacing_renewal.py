"""A cut with more waiting than one re-spacing pass gives every other slot back (a new slot
epoch): the limiter's next slot still keeps clear of a question's slot (which has no epoch),
and waiters only waiting to be given up (their deadline before their slot) take no place in
the pass. Store-level, against the real Redis (found by an audit of issue 21.4)."""

from __future__ import annotations

import time
import uuid

from followup.tasks.request import parse_request
from followup.worker.store import StatusStore
from tests.test_pacing import NUMBER
from tests.test_waits import _backlog, _paced_store


def _h(store: StatusStore, i: str, *f: str) -> list[str | None]:
    return store.redis.hmget(f"{store.ns}:req:{i}", *f)


def test_a_pass_of_doomed_waiters_pushes_live_calls_past_their_deadline(redis_url: str) -> None:
    """B: 2,000 calls due over ~4 s, each with a not_after 9 s out. C: 2,000 calls behind
    them whose not_after (1.2 s) comes before their slots: they wait until their deadline and
    are given up, never using their slots. A cut: the pass is the 2,000 earliest by due, most
    of them C (due = deadline). The renewal voids every B beyond the pass and puts the
    limiter's next slot after the moved C slots (which nobody will use): a B whose old slot
    (~1.5 s) was well before its not_after now re-reserves past its not_after and is given up.
    Should: it is still called before its not_after (its old slot, or one in order)."""
    store = _paced_store(redis_url, limit=100, burst=1, hold=0.05, lead=0.25)
    try:
        t0 = time.time()
        b = _backlog(store, 2000, "b", not_after=t0 + 30.0)
        t1 = time.time()
        c = _backlog(store, 2000, "c", not_after=t1 + 3.0)
        print("B took", t1 - t0, "C done", time.time() - t0)
        before = {i: float(_h(store, i, "slot")[0]) for i in b if _h(store, i, "slot")[0]}
        assert max(float(_h(store, i, "slot")[0] or 0) for i in c) > t0 + 5
        store.slow_down()
        lim = store.redis.hgetall(f"{store.ns}:limiter")
        print("limiter after cut", lim, "now", time.time() - t0)
        epoch = lim.get("epoch", "0")
        voided = [i for i in before if (_h(store, i, "slot_epoch")[0] or "0") != epoch]
        print("B voided", len(voided))
        # the earliest voided B whose old slot is comfortably ahead
        after = {i: float(_h(store, i, "slot")[0]) for i in before}
        cands = sorted(
            (before[i], i)
            for i in before
            if after[i] == before[i] and before[i] > time.time() + 0.4
        )
        old, x = cands[0]
        nx = float(_h(store, x, "next_attempt_at")[0])
        time.sleep(max(0.0, nx - time.time()) + 0.01)
        claim = store.claim(x, lease_s=60)
        assert claim.outcome == "claimed", claim
        answer = store.mark_sent(x, claim.token, user=x)
        slot = float(_h(store, x, "slot")[0] or 0)
        print(
            "X record",
            _h(store, x, "next_attempt_at", "not_after", "give_up_at", "state", "waiting_for"),
            "t0",
            t0,
        )
        print("X old slot", old - t0, "answer", answer, "new slot", slot - t0, "not_after 30.0")
        assert slot < t0 + 30.0, (
            f"X (old slot {old - t0:.2f}s, not_after 30.0s) re-reserved at {slot - t0:.2f}s: "
            "past its deadline, behind slots of waiters that are given up at 1.2s"
        )
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))


def _one(store: StatusStore, tag: str) -> tuple[str, str]:
    i = f"{tag}-{uuid.uuid4().hex[:6]}"
    store.register(
        i,
        parse_request({"contact_id": i, "user_id": i, "phone_number": NUMBER}),
        queue="q",
        source="producer",
    )
    return i, store.claim(i, lease_s=600).token


def test_a_renewal_sets_the_next_slot_onto_a_questions_slot(redis_url: str) -> None:
    """A backlog of 2,000 waits for its slots; the breaker opens (void_slots: a new epoch,
    tat = now + cooldown) and closes again, so the backlog's slots are all of the old epoch
    (each takes a new one when due). Then: P waits for slot p (the new epoch), M is held in
    its thread for p + i, a busy check (take_slot) holds p + 2i (i: the interval at the
    limit). A 429: the pass has >= 2,000 waiting, so it renews; the only slot it plans is
    P's (kept), and the limiter's tat is set to p + i' = p + 2i (i' = 2i at the cut rate),
    below the question's fixed slot. M, given back, takes tat: the very slot the busy check
    holds. Should: no reserved slot lands within an interval of the limit of another."""
    limit = 100
    store = _paced_store(redis_url, limit=limit, burst=1, hold=2.0, lead=0.25)
    lim_key = f"{store.ns}:limiter"
    try:
        _backlog(store, 2400, "w")  # all wait (hold 2 s < their slots) ... most of them
        # the breaker opens (void_slots(now + cooldown)) -- emulated: its effect on the limiter
        now = time.time()
        ep = int(store.redis.hget(lim_key, "epoch") or 0) + 1
        store.redis.hset(lim_key, mapping={"tat": now + 2.3, "epoch": ep})
        p_id, p_tok = _one(store, "p")
        a = store.mark_sent(p_id, p_tok, user=p_id)
        assert a.outcome == "wait", a
        p = float(_h(store, p_id, "slot")[0])
        i = 1 / (limit * 0.98)
        time.sleep(max(0.0, p + 2 * i - 2.0 - time.time()) + 0.003)
        m_id, m_tok = _one(store, "m")
        a = store.mark_sent(m_id, m_tok, user=m_id)
        assert a.outcome == "hold", a
        m_old = float(_h(store, m_id, "slot")[0])
        wait_s, q = store.take_slot()
        assert q is not None, wait_s
        print("p", p - now, "m", m_old - now, "q", q - now)
        store.slow_down()
        lim = store.redis.hgetall(lim_key)
        print("after cut: tat", float(lim["tat"]) - now, "epoch", lim.get("epoch"))
        a = store.mark_sent(m_id, m_tok, user=m_id)  # M's thread wakes up and calls again
        m_new = float(_h(store, m_id, "slot")[0] or 0)
        print("M again", a, "m_new", m_new - now, "q", q - now, "gap", m_new - q)
        assert abs(m_new - q) >= 1 / limit - 1e-6, (m_new - now, q - now)
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))
