"""Per-analyzer leases of a worker group (envcal.ownership), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import random

import pytest

from envcal.ownership import Ownership, lease_table, rendezvous_owner
from envcal.registry import sync_registry

T0 = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=30)


def _worker(engine, registry, name, **kw):
    return Ownership(engine, name, "envcal", registry.analyzers, lease=LEASE, **kw)


def test_rendezvous_owner_hand_worked():
    # the owner is the worker with the largest sha256("worker\x1fanalyzer")
    workers = ["w1", "w2", "w3"]
    for a in ["NB-PP02-CEMS", "HZ-AQ01-PM", "X"]:
        scores = {w: hashlib.sha256(f"{w}\x1f{a}".encode()).hexdigest() for w in workers}
        assert rendezvous_owner(a, workers) == max(scores, key=scores.get)
    assert rendezvous_owner("X", []) is None
    assert rendezvous_owner("X", ["only"]) == "only"


def test_rendezvous_owner_leaving_worker_moves_only_its_share():
    analyzers = [f"A{i:03d}" for i in range(300)]
    three = {a: rendezvous_owner(a, ["w1", "w2", "w3"]) for a in analyzers}
    two = {a: rendezvous_owner(a, ["w1", "w2"]) for a in analyzers}
    assert all(two[a] == three[a] for a in analyzers if three[a] != "w3")
    counts = [sum(1 for o in three.values() if o == w) for w in ("w1", "w2", "w3")]
    assert min(counts) > 60  # spread, not one worker taking everything


def test_ownership_single_worker_owns_all(engine, registry):
    sync_registry(engine, registry)
    a = _worker(engine, registry, "w1@envcal")
    assert a.refresh(T0) == frozenset(registry.analyzers)
    assert a.current(T0) == frozenset(registry.analyzers)
    # the lease runs low: no longer act for anything until renewed
    assert a.current(T0 + LEASE - a.margin) == frozenset()
    assert a.refresh(T0 + dt.timedelta(seconds=25)) == frozenset(registry.analyzers)


def test_ownership_two_workers_split_without_overlap(engine, registry):
    sync_registry(engine, registry)
    a = _worker(engine, registry, "w1@envcal")
    b = _worker(engine, registry, "w2@envcal")
    t = T0
    assert a.refresh(t) == frozenset(registry.analyzers)  # alone at first
    assert b.refresh(t) == frozenset()  # all held by a: nothing taken before expiry
    want_b = {x for x in registry.analyzers if rendezvous_owner(x, [a.worker, b.worker]) == b.worker}
    assert want_b and want_b != set(registry.analyzers)
    t += dt.timedelta(seconds=1)
    assert a.refresh(t) == frozenset(registry.analyzers) - want_b  # hands b's share over
    t += dt.timedelta(seconds=1)
    assert b.refresh(t) == want_b
    assert a.refresh(t) | b.refresh(t) == frozenset(registry.analyzers)
    assert not (a.current(t) & b.current(t))
    owners = {row["analyzer_id"]: row["owner"] for row in lease_table(engine)}
    assert {x for x, o in owners.items() if o == b.worker} == want_b


def _two_settled_workers(engine, registry):
    """Workers w1 and w2 of one group, both seen alive, their shares settled (T0 + 2 s)."""
    sync_registry(engine, registry)
    a = _worker(engine, registry, "w1@envcal")
    b = _worker(engine, registry, "w2@envcal")
    a.refresh(T0)
    b.refresh(T0)
    a.refresh(T0 + dt.timedelta(seconds=1))
    b.refresh(T0 + dt.timedelta(seconds=2))
    return a, b


def test_ownership_failover_after_lease_expiry(engine, registry):
    a, b = _two_settled_workers(engine, registry)
    held_by_a = a.current(T0 + dt.timedelta(seconds=2))
    assert held_by_a
    # a dies (no more refreshes); before its lease ends b takes none of a's analyzers
    t = T0 + dt.timedelta(seconds=20)
    assert not (b.refresh(t) & held_by_a)
    t = T0 + dt.timedelta(seconds=1) + LEASE + dt.timedelta(seconds=1)
    assert b.refresh(t) == frozenset(registry.analyzers)
    assert a.current(t) == frozenset()  # a, were it alive but stalled, would not act


def test_ownership_release_hands_over_at_once(engine, registry):
    a, b = _two_settled_workers(engine, registry)
    a.release(T0 + dt.timedelta(seconds=3))
    assert b.refresh(T0 + dt.timedelta(seconds=4)) == frozenset(registry.analyzers)


def test_ownership_other_group_is_not_a_member(engine, registry):
    sync_registry(engine, registry)
    a = _worker(engine, registry, "w1@envcal")
    other = Ownership(engine, "w9@other", "other", [], lease=LEASE)
    other.refresh(T0)
    a.refresh(T0)
    assert a.live == ("w1@envcal",)


@pytest.mark.parametrize("seed", [1, 2])
def test_ownership_never_two_owners_random_schedule(engine, registry, seed):
    """Three workers refresh, stall, die and come back in a random order: at no instant
    does any analyzer have two workers that may act for it, and a live worker owns every
    analyzer once the schedule settles."""
    sync_registry(engine, registry)
    rnd = random.Random(seed)
    ws = [_worker(engine, registry, f"w{i}@envcal") for i in range(3)]
    t = T0
    for _ in range(120):
        t += dt.timedelta(seconds=rnd.choice([1, 2, 5, 11]))
        w = rnd.choice(ws)
        if rnd.random() < 0.1:
            w.release(t)
        else:
            w.refresh(t)
        for x in registry.analyzers:
            assert sum(x in o.current(t) for o in ws) <= 1, (x, t)
    for _ in range(3):  # everyone keeps refreshing: all analyzers owned, once
        t += dt.timedelta(seconds=2)
        for w in ws:
            w.refresh(t)
    t += dt.timedelta(seconds=1)
    owned = [w.current(t) for w in ws]
    assert sum(len(o) for o in owned) == len(registry.analyzers)
    assert frozenset().union(*owned) == frozenset(registry.analyzers)
