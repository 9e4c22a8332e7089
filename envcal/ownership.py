"""Per-analyzer ownership for ingest workers sharing one MQTT group (issue 8).

With ``envcal ingest --group NAME`` several workers share the analyzers' messages through
MQTT v5 shared subscriptions: any worker may store any reading. Verification and alert
state must still have one writer per analyzer, so each analyzer has exactly one owner at a
time, and only the owner evaluates its checks and runs its alert rules.

Two tables (:class:`envcal.models.WorkerHeartbeat`, :class:`envcal.models.AnalyzerLease`)
and one call, :meth:`Ownership.refresh`, made by the owner's pipeline timer:

1. **Heartbeat.** The worker upserts its ``worker_heartbeat`` row (``seen_at = now``).
   Workers of the same group seen within ``lease`` are the live members.
2. **Spread.** Each analyzer's *preferred* owner is the live worker with the highest
   rendezvous score ``sha256(worker + analyzer)`` (highest random weight hashing): every
   worker computes the same answer from the same heartbeat rows, analyzers spread evenly,
   and a joining or leaving worker moves only its share.
3. **Lease (the safety net).** A worker takes or renews the analyzers it is preferred for
   with one atomic ``UPDATE analyzer_lease SET owner = me, lease_until = now + lease
   WHERE analyzer_id IN (...) AND (owner = me OR lease_until < now)``: a lease held by
   another worker is never taken before it expires, so two workers never own one analyzer
   at once (given clocks synchronised to well within ``lease``, e.g. NTP). Leases it holds
   but is no longer preferred for (a new worker joined) it releases (``lease_until = now``)
   for the preferred worker to take. A lease expired for longer than another ``lease``
   (its preferred worker is not taking it) may be taken by anyone.
4. A worker acts for an analyzer only while its lease has more than ``margin`` left, so the
   lease cannot run out during one timer tick. A dead worker stops renewing: its heartbeat
   and leases expire, the remaining workers' rendezvous winners take its analyzers.

Leases only say *who decides*; the database still has the last word: results are inserted
once per (analyzer, analyte, check id), alerts have a unique open key.

Outside a group (a single worker) none of this runs: the worker owns every analyzer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from envcal.models import AnalyzerLease, WorkerHeartbeat

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def rendezvous_owner(analyzer_id: str, workers: Iterable[str]) -> str | None:
    """The preferred owner of an analyzer among live workers (highest random weight).

    Parameters
    ----------
    analyzer_id : str
    workers : iterable of str
        Names of the live workers.

    Returns
    -------
    str or None
        The worker with the largest ``sha256(worker + "\\x1f" + analyzer_id)``; None when
        there is no worker.

    References
    ----------
    D. G. Thaler and C. V. Ravishankar, "Using name-based mappings to increase hit rates",
    IEEE/ACM Transactions on Networking 6(1), 1998 (rendezvous hashing).
    """
    best, best_score = None, b""
    for w in workers:
        score = hashlib.sha256(f"{w}\x1f{analyzer_id}".encode()).digest()
        if best is None or score > best_score:
            best, best_score = w, score
    return best


def _upsert(engine: Engine):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


class Ownership:
    """One worker's view of which analyzers it owns (see the module docstring).

    Parameters
    ----------
    engine : Engine
        Migrated database shared by the group.
    worker : str
        Unique name of this worker (the ingest service uses ``client_id@group``).
    group : str
        Shared-subscription group name; only members of the same group share analyzers.
    analyzer_ids : iterable of str
        The analyzers of the registry.
    lease : timedelta, default 30 s
        Lease and heartbeat lifetime [s]; renewed every timer tick, so it must be several
        ticks long. A dead worker's analyzers move after at most this long.
    margin : timedelta, optional
        Act for an analyzer only while its lease has more than this left (default
        ``lease / 3``).
    clock : callable, optional
        ``clock() -> aware datetime`` (wall time, UTC); tests pass their own.
    """

    def __init__(self, engine: Engine, worker: str, group: str, analyzer_ids: Iterable[str], *,
                 lease: dt.timedelta = dt.timedelta(seconds=30),
                 margin: dt.timedelta | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        if lease <= dt.timedelta(0):
            raise ValueError("lease must be positive")
        self.engine = engine
        self.worker = worker[:128]
        self.group = group[:128]
        self.analyzer_ids = sorted(set(analyzer_ids))
        self.lease = lease
        self.margin = margin if margin is not None else lease / 3
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.owned: frozenset[str] = frozenset()
        self.valid_until: dt.datetime = EPOCH
        self.live: tuple[str, ...] = ()
        self._insert = _upsert(engine)
        self._started = self.clock()
        self._seeded = False

    # ------------------------------------------------------------------ queries
    def owns(self, analyzer_id: str, now: dt.datetime | None = None) -> bool:
        """True while this worker holds the analyzer's lease with more than ``margin`` left."""
        return analyzer_id in self.current(now)

    def current(self, now: dt.datetime | None = None) -> frozenset[str]:
        """The analyzers this worker may act for now (empty once the leases run low)."""
        now = now or self.clock()
        if now >= self.valid_until - self.margin:
            return frozenset()
        return self.owned

    # ------------------------------------------------------------------ the timer's call
    def refresh(self, now: dt.datetime | None = None) -> frozenset[str]:
        """Heartbeat, then take, renew and release leases; return the analyzers owned.

        Parameters
        ----------
        now : datetime, optional
            Wall time (UTC); default ``clock()``.

        Returns
        -------
        frozenset of str
            Analyzers whose lease this worker holds until ``now + lease``.
        """
        now = now or self.clock()
        until = now + self.lease
        hb = WorkerHeartbeat.__table__
        ls = AnalyzerLease.__table__
        ins = self._insert
        with self.engine.begin() as conn:
            stmt = ins(hb).values(worker=self.worker, group_name=self.group,
                                  started_at=self._started, seen_at=now)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["worker"], set_={"seen_at": now, "group_name": self.group}))
            if not self._seeded and self.analyzer_ids:
                conn.execute(ins(ls).on_conflict_do_nothing(),
                             [{"analyzer_id": a, "owner": "", "lease_until": EPOCH}
                              for a in self.analyzer_ids])
        with self.engine.connect() as conn:
            live = sorted({w for (w,) in conn.execute(
                sa.select(hb.c.worker).where(hb.c.group_name == self.group,
                                             hb.c.seen_at > now - self.lease))} | {self.worker})
        self._seeded = True
        self.live = tuple(live)
        wanted = [a for a in self.analyzer_ids if rendezvous_owner(a, live) == self.worker]
        mine = set(wanted)
        others = [a for a in self.analyzer_ids if a not in mine]
        with self.engine.begin() as conn:
            if wanted:
                conn.execute(ls.update().where(
                    ls.c.analyzer_id.in_(wanted),
                    sa.or_(ls.c.owner == self.worker, ls.c.lease_until < now))
                    .values(owner=self.worker, lease_until=until,
                            acquired_at=sa.case((ls.c.owner == self.worker, ls.c.acquired_at),
                                                else_=now)))
            if others:
                # hand over what another live worker is preferred for
                conn.execute(ls.update().where(ls.c.analyzer_id.in_(others),
                                               ls.c.owner == self.worker, ls.c.lease_until > now)
                             .values(lease_until=now))
                # safety net: an analyzer nobody has renewed for a whole extra lease
                conn.execute(ls.update().where(ls.c.analyzer_id.in_(others),
                                               ls.c.lease_until < now - self.lease)
                             .values(owner=self.worker, lease_until=until, acquired_at=now))
            owned = frozenset(a for (a,) in conn.execute(
                sa.select(ls.c.analyzer_id).where(ls.c.owner == self.worker, ls.c.lease_until > now)))
        self.owned = owned
        self.valid_until = until
        return owned

    def release(self, now: dt.datetime | None = None) -> None:
        """Leave the group (graceful stop): drop the heartbeat, expire this worker's leases,
        so the remaining workers take the analyzers at their next tick."""
        now = now or self.clock()
        self.owned = frozenset()
        self.valid_until = EPOCH
        with self.engine.begin() as conn:
            conn.execute(WorkerHeartbeat.__table__.delete().where(
                WorkerHeartbeat.__table__.c.worker == self.worker))
            ls = AnalyzerLease.__table__
            conn.execute(ls.update().where(ls.c.owner == self.worker, ls.c.lease_until > now)
                         .values(lease_until=now))


def lease_table(engine: Engine) -> list[dict]:
    """The current leases (for ``envcal stats``-like inspection and tests)."""
    ls = AnalyzerLease.__table__
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(ls).order_by(ls.c.analyzer_id)).mappings()]
