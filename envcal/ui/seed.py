"""A seeded demonstration database for the app's tests, screenshots and benchmark.

:func:`seed_demo` builds the stations of ``stations/``, imports the sample certificates of
``reference_materials/samples``, records instrument verifications, writes a few weeks of
check results (one drifting CEMS channel that ends out of control, one failure followed by
recovery, one analyzer that never reported) with raw readings around the newest check of
the drifting channel, and creates one account per role.

:func:`seed_scale` writes a large synthetic network (for ``benchmarks/bench_ui.py``).
Results are written with :func:`envcal.verify.store_results` (the same path as live
verification); their numbers are synthetic, their verdicts come from the rule packs.
Both then run the alert engine over the results
(:meth:`envcal.alerts.AlertEngine.reevaluate_all`, as the service does), so the alerts and
out-of-control periods the UI reads are the engine's own.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from envcal.models import Analyzer, Channel, InstrumentVerification, Reading, Station, utcnow

ROOT = Path(__file__).resolve().parents[2]
STATIONS = ROOT / "stations"
SAMPLES = ROOT / "reference_materials" / "samples"

#: login name -> (role, password) of the seeded accounts
DEMO_USERS: dict[str, tuple[str, str]] = {
    "admin": ("admin", "admin-pass-2026"),
    "staff": ("staff", "staff-pass-2026"),
    "lab": ("lab", "lab-pass-2026"),
    "viewer": ("viewer", "viewer-pass-2026"),
}
#: the analyzer whose instrument verification expires soon (a ``verification_due`` reminder)
EXPIRING = "HZ-SW01-WQ"
DRIFTING = ("JX-PP01-CEMS", "SO2", "span")
RECOVERED = ("NB-PP02-CEMS", "NOx", "span")
SILENT = "HZ-AQ02-PM"
UNVERIFIED = "SX-WW01-WQ"


def seed_verifications(engine: Engine, analyzer_ids: list[str], now: dt.datetime) -> int:
    """Record one instrument verification (检定) per analyzer, as a metrology institute
    issues them: most valid for months, :data:`EXPIRING` within 15 days, :data:`UNVERIFIED`
    expired. Records already there are kept (``unchanged``).

    Returns
    -------
    int
        Records created.
    """
    from envcal.instruments import add_verification_record

    n = 0
    for i, aid in enumerate(analyzer_ids):
        age = 400 if aid == UNVERIFIED else 350 if aid == EXPIRING else 60 + 17 * i
        d0 = now.date() - dt.timedelta(days=age)
        o = add_verification_record(engine, aid, f"ZJJL{d0:%Y}-{i + 1:04d}", "浙江省计量科学研究院",
                                    d0, "qualified", d0 + dt.timedelta(days=364), actor="seed")
        n += o.status == "created"
    return n


def create_accounts(engine: Engine, users: dict[str, tuple[str, str]] | None = None
                    ) -> dict[str, tuple[str, str]]:
    """One account per role: ``users`` (name -> (role, password)); default a fresh random
    password for each of admin, staff, lab and viewer (what ``envcal demo`` prints).

    Returns
    -------
    dict
        name -> (role, password) of the accounts created or replaced.
    """
    import secrets

    from envcal.users import add_user

    if users is None:
        users = {name: (role, secrets.token_urlsafe(9)) for name, (role, _pw) in DEMO_USERS.items()}
    for name, (role, pw) in users.items():
        add_user(engine, name, role, pw, actor="seed", replace=True)
    return dict(users)


def format_accounts(accounts: dict[str, tuple[str, str]]) -> str:
    """The sign-in line ``envcal demo`` prints: ``name / password (role); ...``."""
    return "; ".join(f"{name} / {pw} ({role})" for name, (role, pw) in accounts.items())


def parse_accounts(line: str) -> dict[str, tuple[str, str]]:
    """The accounts of a :func:`format_accounts` line (name -> (role, password))."""
    out = {}
    for part in line.split("; "):
        name, _, rest = part.strip().partition(" / ")
        pw, _, role = rest.rpartition(" (")
        out[name] = (role.rstrip(")"), pw)
    return out


def _materials(engine: Engine) -> dict[str, str]:
    """analyte -> a current certificate id covering it (zero materials under ``zero:``)."""
    from envcal.certificates import list_certificates

    out: dict[str, str] = {}
    for c in list_certificates(engine):
        for a in c["analytes"]:
            key = f"zero:{a}" if c["kind"] == "zero_material" else a
            out.setdefault(key, c["id"])
    return out


def _result(aid: str, station: str, analyte: str, kind: str, unit: str, span: float, end,
            value: float, rule, pack, material: str | None, n: int) -> dict:
    ref = 0.0 if kind == "zero" else 0.8 * span
    if rule.quantity == "error_rel_pct":
        mean = ref * (1 + value / 100.0) if ref else value
    elif rule.quantity == "error_abs":
        mean = ref + value
    else:
        mean = ref + value * span / 100.0
    verdict = rule.verdict(value)
    err_abs = mean - ref
    words = {"pass": ("within the limit", "合格"), "warn": ("in the warning band", "预警"),
             "fail": ("above the limit", "超限")}[verdict]
    return {
        "analyzer": aid, "station": station, "analyte": analyte, "kind": kind,
        "check_id": f"CK-{end:%Y%m%d-%H%M}-{analyte}-{kind}", "source": "readings",
        "start": end - dt.timedelta(minutes=15), "end": end, "unit": unit, "span": span,
        "n": n, "mean": mean, "sd": span * 0.001, "u_mean": span * 0.0004, "t90_s": 95.0,
        "plateau_start": end - dt.timedelta(minutes=8), "plateau_end": end,
        "reference": ref, "u_reference": ref * 0.005, "error_abs": err_abs,
        "error_rel_pct": err_abs / ref * 100.0 if ref else None,
        "error_fs_pct": err_abs / span * 100.0, "drift_fs_pct": None, "en": None,
        "bias_ok": verdict == "pass", "verdict": verdict, "rule": rule.id,
        "rule_status": rule.status, "pack": pack.name, "pack_version": pack.effective_version,
        "material": material, "certificate_pk": None, "molar_volume": pack.molar_volume,
        "reason_en": f"{rule.quantity} {value:+.2f} {rule.unit} {words[0]} "
                     f"(warn {rule.warn:g}, limit {rule.limit:g}) per {rule.id}",
        "reason_zh": f"{rule.title_zh} {value:+.2f} {rule.unit}，{words[1]}"
                     f"（预警 {rule.warn:g}，限值 {rule.limit:g}）",
        "device_verdict": None, "device_measured": None, "details": {"seeded": True},
    }


def seed_demo(engine: Engine, *, now: dt.datetime | None = None, days: int = 28,
              stations: Path = STATIONS, samples: Path = SAMPLES, users: bool = True,
              seed: int = 7) -> dict:
    """Fill a migrated database with a small, realistic network (see the module docstring).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        A migrated, empty database.
    now : datetime, optional
        The "current" time of the data (timezone-aware), default now.
    days : int, default 28
        Days of check history.
    users : bool, default True
        Create the accounts of :data:`DEMO_USERS`.

    Returns
    -------
    dict
        ``now``, ``results`` (count), ``certificates`` (ids), ``drifting_result`` (id of the
        newest check of the drifting channel, which has raw readings), ``alerts`` (alert
        transitions made by the alert engine).
    """
    from envcal.certificates import CertificateError, import_certificate
    from envcal.registry import load_registry, sync_registry
    from envcal.rules import load_pack
    from envcal.verify import store_results

    now = (now or utcnow()).astimezone(dt.UTC).replace(second=0, microsecond=0)
    reg = load_registry(stations)
    sync_registry(engine, reg)
    certs = []
    for f in sorted(samples.glob("*.json")):
        try:
            certs.append(import_certificate(engine, f, actor="seed").cert_id)
        except CertificateError:
            continue
    mats = _materials(engine)
    rng = np.random.default_rng(seed)
    seed_verifications(engine, list(reg.analyzers), now)
    results = []
    for aid, a in reg.analyzers.items():
        if aid == SILENT:
            continue
        pack = load_pack(a.rule_pack)
        for ch in a.channels:
            for kind, freq in pack.required_checks(ch.analyte):
                rules = pack.rules_for(kind, ch.analyte)
                if not rules:
                    continue
                rule = rules[0]
                step = min(freq, dt.timedelta(days=7))
                # checks at 08:00 China time (00:00 UTC), newest first
                t = now.replace(hour=0, minute=0) if now.hour >= 1 else \
                    now.replace(hour=0, minute=0) - dt.timedelta(days=1)
                times = []
                while t > now - dt.timedelta(days=days):
                    times.append(t)
                    t -= step
                times = times[::-1]
                material = mats.get(f"zero:{ch.analyte}") if kind == "zero" else mats.get(ch.analyte)
                for i, end in enumerate(times):
                    frac = i / max(len(times) - 1, 1)
                    value = float(rng.normal(0.0, 0.25 * rule.warn))
                    if (aid, ch.analyte, kind) == DRIFTING:
                        value = 0.2 + 2.9 * frac + float(rng.normal(0, 0.08))
                    if (aid, ch.analyte, kind) == RECOVERED and i == len(times) - 10:
                        value = 1.6 * rule.limit
                    results.append(_result(aid, a.station, ch.analyte, kind, ch.unit, ch.span,
                                           end, value, rule, pack, material, 40))
    store_results(engine, results)
    drift_id = _seed_readings(engine, reg, now)
    alerts = _seed_alerts(engine, reg, now)
    accounts = create_accounts(engine, DEMO_USERS) if users else {}
    return {"now": now, "results": len(results), "certificates": certs,
            "drifting_result": drift_id, "alerts": alerts, "accounts": accounts}


def _seed_alerts(engine: Engine, reg, now: dt.datetime | None = None) -> int:
    """Raise alerts and store out-of-control periods from the results with the alert
    engine (the service's own evaluation), then, with ``now``, run its timer once (overdue
    checks, instrument verification due dates); the number of alert transitions."""
    from envcal.alerts import AlertEngine

    ae = AlertEngine(engine, reg)
    try:
        n = len(ae.reevaluate_all())
        if now is not None:
            n += len(ae.tick(now))
        return n
    finally:
        ae.close()


def _seed_readings(engine: Engine, reg, now: dt.datetime) -> int | None:
    """One-minute readings of the drifting channel from 30 min before its newest check to
    ``now``."""
    from envcal.models import CheckResult

    aid, analyte, kind = DRIFTING
    c = CheckResult.__table__.c
    with engine.connect() as conn:
        row = conn.execute(sa.select(c.id, c.start, c.end, c.mean, c.check_id, c.material)
                           .where(c.analyzer_id == aid, c.analyte == analyte, c.kind == kind)
                           .order_by(c.end.desc()).limit(1)).first()
    if row is None:
        return None
    rid, start, end, mean, check_id, material = row
    span = reg.analyzers[aid].channel(analyte).span
    base = 0.18 * span
    rows = []
    t = start - dt.timedelta(minutes=30)
    seq = 1000
    # readings continue to ``now`` (the analyzer still reports: no "no data" alert)
    while t <= max(end + dt.timedelta(minutes=30), now):
        in_check = start <= t <= end
        if in_check:
            k = (t - start).total_seconds() / 60.0
            v = base + (mean - base) * (1 - np.exp(-k / 2.0)) + 0.1 * np.sin(k)
        else:
            v = base + 1.5 * np.sin((t - start).total_seconds() / 600.0)
        rows.append({"analyzer_id": aid, "analyte": analyte, "ts": t, "value": float(v),
                     "flag": "C" if in_check else "N", "seq": seq,
                     "check_id": check_id if in_check else None,
                     "check_kind": kind if in_check else None,
                     "check_phase": ("end" if t == end else "start" if t == start else "run")
                     if in_check else None,
                     "material": material if in_check else None, "received_at": t})
        t += dt.timedelta(minutes=1)
        seq += 1
    with engine.begin() as conn:
        conn.execute(Reading.__table__.insert(), rows)
    return int(rid)


def seed_scale(engine: Engine, *, analyzers: int = 1000, days: int = 365,
               now: dt.datetime | None = None, seed: int = 1) -> int:
    """A synthetic network of ``analyzers`` flue-gas CEMS (one SO2 channel each, HJ 75-2017)
    at ``analyzers // 10`` stations, with one daily span check per analyzer for ``days``
    days, evaluated by the alert engine (alerts and out-of-control periods stored).

    Returns
    -------
    int
        Number of results written.
    """
    from envcal.registry import AnalyzerSpec, ChannelSpec, Registry, StationSpec
    from envcal.rules import load_pack

    now = (now or utcnow()).astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    pack = load_pack("hj75_2017")
    rule = pack.rules_for("span", "SO2")[0]
    rng = np.random.default_rng(seed)
    n_st = max(1, analyzers // 10)
    reg = Registry()
    for i in range(n_st):
        reg.stations[f"ST{i:04d}"] = StationSpec(
            id=f"ST{i:04d}", name=f"站点 {i:04d}", kind="flue_gas", lat=27.0 + 4.0 * rng.random(),
            lon=118.0 + 4.0 * rng.random(), operator=f"运营单位 {i % 40:02d}")
    for i in range(analyzers):
        reg.analyzers[f"A{i:05d}"] = AnalyzerSpec(
            id=f"A{i:05d}", station=f"ST{i % n_st:04d}", model="CEMS-2000", serial=f"S{i:05d}",
            rule_pack="hj75_2017", channels=[ChannelSpec(analyte="SO2", unit="mg/m3", span=200.0)])
    with engine.begin() as conn:
        conn.execute(Station.__table__.insert(), [
            {"id": s.id, "name": s.name, "kind": s.kind, "lat": s.lat, "lon": s.lon,
             "operator": s.operator} for s in reg.stations.values()])
        conn.execute(Analyzer.__table__.insert(), [
            {"id": a.id, "station_id": a.station, "model": a.model, "serial": a.serial,
             "mn": None, "rule_pack": a.rule_pack, "protocol": a.protocol}
            for a in reg.analyzers.values()])
        conn.execute(Channel.__table__.insert(), [
            {"analyzer_id": f"A{i:05d}", "analyte": "SO2", "unit": "mg/m3", "span": 200.0,
             "hj212_code": None} for i in range(analyzers)])
        conn.execute(InstrumentVerification.__table__.insert(), [
            {"analyzer_id": f"A{i:05d}", "cert_number": f"V{i:05d}", "institute": "ZJIM",
             "date": now.date() - dt.timedelta(days=100), "result": "qualified",
             "errors": None, "valid_until": now.date() + dt.timedelta(days=200),
             "attachment_sha256": None, "recorded_at": now, "recorded_by": "seed"}
            for i in range(analyzers)])
    cols = ["analyzer_id", "station_id", "analyte", "kind", "check_id", "source", "start", "end",
            "unit", "span", "n", "error_fs_pct", "verdict", "rule", "rule_status", "pack",
            "pack_version", "reason_en", "reason_zh", "needs_review", "evaluated_at"]
    sqlite = engine.dialect.name == "sqlite"

    def ts(t: dt.datetime):
        # SQLite: the text form SQLAlchemy's DateTime writes for envcal's naive-UTC storage
        return t.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else t

    n = 0
    ev = ts(utcnow())
    ends = [now - dt.timedelta(days=days - 1 - d) for d in range(days)]
    starts = [ts(e - dt.timedelta(minutes=15)) for e in ends]
    ends_s = [ts(e) for e in ends]
    verdict = np.vectorize(rule.verdict, otypes=[object])
    with engine.begin() as conn:
        for i in range(analyzers):
            vals = rng.normal(0.0, 0.7, size=days)
            vs = verdict(vals)
            aid, sid = f"A{i:05d}", f"ST{i % n_st:04d}"
            rows = [(aid, sid, "SO2", "span", f"CK{d}", "readings", starts[d], ends_s[d], "mg/m3",
                     200.0, 40, float(vals[d]), vs[d], rule.id, rule.status, "hj75_2017",
                     pack.effective_version, "", "", False, ev) for d in range(days)]
            if sqlite:
                q = ", ".join('"' + c + '"' for c in cols)
                conn.exec_driver_sql(f"INSERT INTO check_result ({q}) VALUES "
                                     f"({', '.join('?' * len(cols))})", rows)
            else:
                conn.execute(sa.Table("check_result", sa.MetaData(), autoload_with=conn).insert(),
                             [dict(zip(cols, r, strict=True)) for r in rows])
            n += len(rows)
    _seed_alerts(engine, reg)
    return n
