"""The verification service: gather a check's inputs, call the pure core, store, notify.

:class:`Verifier` is the only place where checks meet the database. For a batch of checks
it first reads everything an evaluation needs (the channel, the certified value of the
material at the check's end from :mod:`envcal.certificates` with the pack's molar volume,
the mean of the previous valid check of the same kind), then judges all of them in one
call of :func:`envcal.checks.core.evaluate_many` (the batch kernel with its verdict
stage), then stores the results in one transaction and hands their JSON to the listeners.

The drift of a check rests on the mean of the previous valid check of the same channel and
kind, which may be in the same batch (a replay). The batch is therefore judged to a fixed
point: first every check against the newest valid stored result not in the batch, then
each check whose previous valid check (stored, or in the batch by end time) has another
mean is judged again with it, until nothing changes. Means and plateaus do not depend on
the previous check, only drift and validity do, so this ends after a few rounds and gives
the results of judging the checks one by one in time order.

References
----------
HJ 75-2017 clause 7 and Appendix A; HJ 355-2019; ISO 13528:2022 §9.7; ISO Guide 33:2015
§7.3; 40 CFR 75 Appendix A §3.1.
"""

from __future__ import annotations

import bisect
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
from envcal.checks.store import previous_results, store_results
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

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self, check: CheckReadings) -> list[CheckResult]:
        """Evaluate one check: one result per analyte (levels combined for linearity)."""
        return self.evaluate_many([check])

    def evaluate_many(self, checks: Sequence[CheckReadings]) -> list[CheckResult]:
        """Judge checks (in time order) without storing: one result per channel check.

        Reads the inputs (references, previous stored results), then calls the pure core
        to a fixed point (see the module docstring).
        """
        units = [levels for c in checks for levels in self.channel_readings(c)]
        if not units:
            return []
        offsets = [0]
        for levels in units:
            offsets.append(offsets[-1] + len(levels))
        in_batch: dict[tuple[str, str, str], list[str]] = {}
        for levels in units:
            r = levels[0]
            in_batch.setdefault((r.analyzer, r.analyte, r.kind), []).append(r.check_id)
        refs: list[Reference] = []
        packs: list[RulePack] = []
        for levels in units:
            analyzer = self.registry.analyzers[levels[0].analyzer]
            pack = self.packs[analyzer.rule_pack]
            for lv in levels:
                refs.append(self.reference(analyzer, lv.analyte, lv.kind, lv.material, lv.end,
                                           pack))
                packs.append(pack)
        starts = [min(lv.start for lv in levels) for levels in units]
        stored: list[tuple[float, dt.datetime] | None] = [None] * len(units)
        by_key: dict[tuple[str, str, str], list[int]] = {}
        for u, levels in enumerate(units):
            by_key.setdefault((levels[0].analyzer, levels[0].analyte, levels[0].kind), []).append(u)
        for key, members in by_key.items():
            got = previous_results(self.engine, *key, [starts[u] for u in members], in_batch[key])
            for u, g in zip(members, got, strict=True):
                stored[u] = g
        prev: list[float | None] = [None if p is None else p[0] for p in stored]
        results: list[CheckResult | None] = [None] * len(units)
        todo = list(range(len(units)))
        while todo:
            cases = [Case(lv, refs[offsets[u] + k], prev[u], packs[offsets[u] + k])
                     for u in todo for k, lv in enumerate(units[u])]
            got = evaluate_many(cases)
            j = 0
            for u in todo:
                n = len(units[u])
                results[u] = combine_levels(got[j:j + n])
                j += n
            chained = _chain(units, results, stored)
            todo = [u for u in range(len(units)) if chained[u] != prev[u]]
            prev = chained
        return [r for r in results if r is not None]

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
        out = store_results(self.engine, self.evaluate_many(todo), only_new=only_new)
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


def _chain(units: Sequence[Sequence[ChannelReadings]], results: Sequence[CheckResult | None],
           stored: Sequence[tuple[float, dt.datetime] | None]) -> list[float | None]:
    """Per channel check: the mean of its previous valid check — the newest by end time of
    the stored one and the valid results in the batch of the same channel and kind that
    end before it starts (another check id)."""
    by_key: dict[tuple[str, str, str], list[int]] = {}
    for u, levels in enumerate(units):
        r = levels[0]
        by_key.setdefault((r.analyzer, r.analyte, r.kind), []).append(u)
    out: list[float | None] = [None] * len(units)
    for members in by_key.values():
        valid = sorted((r.end, r.mean, r.check_id) for w in members
                       if (r := results[w]) is not None and r.verdict != "invalid"
                       and r.mean is not None)
        ends = [v[0] for v in valid]
        for u in members:
            start = min(lv.start for lv in units[u])
            best = stored[u]
            i = bisect.bisect_left(ends, start) - 1
            while i >= 0 and valid[i][2] == units[u][0].check_id:
                i -= 1
            if i >= 0 and (best is None or valid[i][0] > best[1]):
                best = (valid[i][1], valid[i][0])
            out[u] = None if best is None else best[0]
    return out


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
