"""The verification service: gather a check's inputs, call the pure core, store, notify.

:class:`Verifier` is the only place where checks meet the database. For a batch of checks
it first reads everything an evaluation needs (the channel, the certified value of the
material at the check's end from :mod:`envcal.certificates` with the pack's molar volume,
the mean of the previous valid check of the same kind), then judges all of them in one
call of :func:`envcal.checks.core.evaluate_many` (the batch kernel with its verdict
stage), then stores the results and hands their JSON to the listeners. Checks of the same
channel and kind are judged in time order (the drift of a check rests on the previous
one's stored mean): a batch is split into generations in which every channel and kind
occurs at most once.

References
----------
HJ 75-2017 clause 7 and Appendix A; HJ 355-2019; ISO 13528:2022 §9.7; ISO Guide 33:2015
§7.3; 40 CFR 75 Appendix A §3.1.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from envcal.certificates import Refusal, certified_value
from envcal.checks.core import (
    Case,
    ChannelReadings,
    Reference,
    combine_levels,
    evaluate_many,
)
from envcal.checks.extract import (
    CheckReadings,
    archived_checks,
    completeness,
    first_material,
    load_check,
    material_segments,
    pending_checks,
    pending_summaries,
    summaries_in,
    summary_to_check,
)
from envcal.checks.result import CheckResult
from envcal.checks.store import previous_mean, store_results
from envcal.models import CheckSummaryRecord
from envcal.registry import AnalyzerSpec, Registry
from envcal.rules import RulePack
from envcal.rules.confirmations import load_pack

ResultListener = Callable[[list[dict[str, Any]]], None]


class Verifier:
    """Evaluates checks for the analyzers of a registry under their rule packs.

    Parameters
    ----------
    engine : Engine
        Storage (results are written here; certificates and previous results read).
    registry : Registry
        Stations and analyzers; every analyzer's ``rule_pack`` is loaded at construction,
        so a missing or malformed pack is an error at start, not at the first check.
    listeners : list of callables, optional
        Called with the list of result JSON objects (:meth:`CheckResult.to_json`) after
        each batch is stored; the ingest service publishes them on MQTT.
    """

    def __init__(self, engine: Engine, registry: Registry, *,
                 listeners: Sequence[ResultListener] = ()) -> None:
        self.engine = engine
        self.registry = registry
        self.listeners = list(listeners)
        self.packs: dict[str, RulePack] = {}
        for a in registry.analyzers.values():
            if a.rule_pack not in self.packs:
                self.packs[a.rule_pack] = load_pack(a.rule_pack, engine)

    # -- inputs --------------------------------------------------------------------------
    def reference(self, analyzer: AnalyzerSpec, analyte: str, kind: str, material: str,
                  at: dt.datetime, pack: RulePack) -> Reference:
        """The reference value of a channel check [channel unit], or the refusal.

        A zero check without material uses 0 with no uncertainty; a flow check without
        material uses the channel's set point (its span, the design flow); any other
        check must name a material, whose certified value valid at ``at`` is converted
        with the pack's molar volume.
        """
        channel = analyzer.channel(analyte)
        if not material:
            if kind == "zero":
                return Reference(0.0, 0.0)
            if kind == "flow":
                return Reference(float(channel.span), 0.0)
            return Reference(None, None, refusal_code="no_material",
                             refused_en=f"a {kind} check must name its reference material",
                             refused_zh=f"{kind} 核查必须注明所用标准物质")
        got = certified_value(self.engine, material, analyte, channel.unit, at,
                              molar_volume=pack.molar_volume)
        if isinstance(got, Refusal):
            return Reference(None, None, refusal_code=got.code, refused_en=got.reason,
                             refused_zh=got.reason_zh)
        return Reference(float(got.value), float(got.u), got.certificate_pk, got.molar_volume)

    def channel_readings(self, check: CheckReadings) -> list[list[ChannelReadings]]:
        """A check's channels (known to the registry), each as its levels."""
        analyzer = self.registry.analyzers[check.analyzer_id]
        out = []
        for analyte in sorted(set(check.analyte.tolist())):
            channel = analyzer.channel(analyte)
            if channel is None:
                continue  # ingest dead-letters unknown analytes; nothing to judge here
            sel = check.analyte == analyte
            ts, values, materials = check.ts[sel], check.value[sel], check.material[sel]
            segments = (material_segments(materials) if check.kind == "linearity"
                        else [(0, len(values))])
            out.append([ChannelReadings(
                analyzer=analyzer.id, station=analyzer.station, analyte=analyte,
                kind=check.kind, check_id=check.check_id, unit=channel.unit,
                span=float(channel.span), ts=ts[a:b], values=values[a:b],
                material=first_material(materials[a:b]), source=check.source,
                level=k if len(segments) > 1 else None,
                device_verdict=check.device_verdict.get(analyte),
                device_measured=check.device_measured.get(analyte),
                completeness=check.completeness) for k, (a, b) in enumerate(segments)])
        return out

    def case(self, r: ChannelReadings) -> Case:
        """Gather the inputs of one channel check (database reads happen here)."""
        analyzer = self.registry.analyzers[r.analyzer]
        pack = self.packs[analyzer.rule_pack]
        ref = self.reference(analyzer, r.analyte, r.kind, r.material, r.end, pack)
        prev = previous_mean(self.engine, r.analyzer, r.analyte, r.kind, r.start, r.check_id)
        return Case(r, ref, prev, pack)

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self, check: CheckReadings) -> list[CheckResult]:
        """Evaluate one check: one result per analyte (levels combined for linearity)."""
        channels = self.channel_readings(check)
        flat = evaluate_many([self.case(lv) for levels in channels for lv in levels])
        out, i = [], 0
        for levels in channels:
            out.append(combine_levels(flat[i:i + len(levels)]))
            i += len(levels)
        return out

    def evaluate_and_store(self, checks: Iterable[CheckReadings], *,
                           only_new: bool = False) -> list[CheckResult]:
        """Evaluate checks in time order, store the results, notify listeners.

        Parameters
        ----------
        checks : iterable of CheckReadings
        only_new : bool, default False
            Insert results that do not exist yet and drop the others (worker groups: a
            result is decided and published once); default: upsert (replay rewrites).

        Returns
        -------
        list of CheckResult
            The results stored (and passed to the listeners as JSON).
        """
        todo = sorted((c for c in checks if len(c.ts) and c.analyzer_id in self.registry.analyzers),
                      key=lambda c: (c.ts[-1], c.check_id))
        out: list[CheckResult] = []
        for generation in _generations(todo):
            channels = [self.channel_readings(c) for c in generation]
            flat = evaluate_many([self.case(lv) for ch in channels for levels in ch
                                  for lv in levels])
            results, i = [], 0
            for ch in channels:
                for levels in ch:
                    results.append(combine_levels(flat[i:i + len(levels)]))
                    i += len(levels)
            out.extend(store_results(self.engine, results, only_new=only_new))
        if out:
            payload = [r.to_json() for r in out]
            for fn in self.listeners:
                fn(payload)
        return out

    def verify_pending(self, *, stale_after: dt.timedelta = dt.timedelta(minutes=30),
                       analyzer_ids: Iterable[str] | None = None,
                       settle: dt.timedelta | None = None, now: dt.datetime | None = None,
                       only_new: bool = False) -> list[CheckResult]:
        """Evaluate every complete check in the hot store that has no result yet; also
        the device summaries that have none.

        Parameters
        ----------
        stale_after : timedelta
            A check without ``end`` is complete after this much newer data (data time).
        analyzer_ids : iterable of str, optional
            Only these analyzers (a group worker: the ones it owns).
        settle : timedelta, optional
            Worker groups: also require :func:`completeness` (default: not checked).
        now : datetime, optional
            Wall time for ``settle`` (default: now).
        only_new : bool, default False
            See :meth:`evaluate_and_store`.

        Returns
        -------
        list of CheckResult
            The results stored.
        """
        if analyzer_ids is not None:
            analyzer_ids = list(analyzer_ids)
        now = now or dt.datetime.now(dt.UTC)
        checks = []
        for analyzer_id, check_id in pending_checks(self.engine, stale_after=stale_after,
                                                    analyzer_ids=analyzer_ids):
            note = None
            if settle is not None:
                note = completeness(self.engine, analyzer_id, check_id, settle=settle, now=now)
                if note is None:
                    continue  # readings may still be in another worker's batch
            c = load_check(self.engine, analyzer_id, check_id)
            if c is not None:
                c.completeness = note
                checks.append(c)
        checks.extend(pending_summaries(self.engine, analyzer_ids=analyzer_ids))
        return self.evaluate_and_store(checks, only_new=only_new)

    def on_commit(self, ended_checks: Sequence[tuple[str, str]],
                  summaries: Sequence[int]) -> list[CheckResult]:
        """Ingest hook: evaluate the checks whose ``end`` reading was just committed."""
        checks = [c for a, ck in ended_checks if (c := load_check(self.engine, a, ck)) is not None]
        if summaries:
            with Session(self.engine) as s:
                recs = s.exec(select(CheckSummaryRecord).where(
                    CheckSummaryRecord.id.in_(list(summaries)))).all()
            checks.extend(summary_to_check(r) for r in recs)
        return self.evaluate_and_store(checks)


def _generations(checks: Sequence[CheckReadings]) -> list[list[CheckReadings]]:
    """Split time-ordered checks so that each (analyzer, analyte, kind) occurs at most once
    per generation, and a check comes after every earlier check of its channels."""
    last: dict[tuple[str, str, str], int] = {}
    gens: list[list[CheckReadings]] = []
    for c in checks:
        keys = [(c.analyzer_id, str(a), c.kind) for a in set(c.analyte.tolist())]
        g = max((last[k] + 1 for k in keys if k in last), default=0)
        for k in keys:
            last[k] = g
        while len(gens) <= g:
            gens.append([])
        gens[g].append(c)
    return gens


def replay(verifier: Verifier, archive_dir: str | Path | None, start: dt.datetime,
           end: dt.datetime, *, analyzer_ids: Iterable[str] | None = None,
           progress: Callable[[int, int], None] | None = None,
           batch: int = 2000) -> list[CheckResult]:
    """Re-evaluate every check that ended in [start, end) from the hot store and archive.

    Checks are evaluated in time order with the code of the live path
    (:meth:`Verifier.evaluate_and_store`, the batch kernel), so the stored results are
    identical to live evaluation (same rule pack version and certificates).

    Parameters
    ----------
    verifier : Verifier
    archive_dir : str or Path or None
        NetCDF archive root (None: hot store only).
    start, end : datetime
        Timezone-aware period [start, end).
    analyzer_ids : iterable of str, optional
        Limit to these analyzers.
    progress : callable, optional
        Called with (done, total) checks.
    batch : int, default 2000
        Checks per :meth:`Verifier.evaluate_and_store` call.

    Returns
    -------
    list of CheckResult
        The results (as stored).
    """
    wanted = None if analyzer_ids is None else set(analyzer_ids)
    checks = archived_checks(verifier.engine, archive_dir, verifier.registry, start, end,
                             analyzer_ids=wanted)
    checks += [c for c in summaries_in(verifier.engine, start, end)
               if wanted is None or c.analyzer_id in wanted]
    checks.sort(key=lambda c: (c.ts[-1] if len(c.ts) else np.datetime64(0, "us"), c.check_id))
    out: list[CheckResult] = []
    for i in range(0, len(checks), batch):
        out.extend(verifier.evaluate_and_store(checks[i:i + batch]))
        if progress:
            progress(min(i + batch, len(checks)), len(checks))
    return out
