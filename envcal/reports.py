"""Monthly verification reports per station or for the network: CSV, NetCDF and PDF.

:func:`monthly_report` gathers the month (calendar month in the agency's time zone,
:func:`envcal.views.local_tz`): the verification coverage at the month's end (or now, for
the running month), every check result, failures, out-of-control hours (of the periods
the alert engine stored, :func:`envcal.views.out_of_control_periods`) and alerts per
analyzer. The writers render the same object:

- :func:`report_csv`: one row per check result (UTF-8 with BOM, so spreadsheet programs
  read the Chinese text), preceded by nothing else, for machines;
- :func:`report_netcdf`: CF-1.8 NetCDF with the results along ``result`` (data) and
  ``verdict_flag`` (flags, ``flag_values``/``flag_meanings``), plus per-analyzer totals;
- :func:`report_pdf`: a printable report (fpdf2) with a daily verdict chart, a coverage
  bar against the 96 % target, the per-analyzer table and the failures, in Chinese (needs
  a CJK TrueType font, :data:`CJK_FONTS`) or English.

References
----------
HJ 75-2017 clause 11-12 (data review, out-of-control periods); CF Conventions 1.8 §3.5
(flags).
"""

from __future__ import annotations

import datetime as dt
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from envcal import views
from envcal.models import CheckResult

#: CJK fonts for Chinese PDFs, (file, face index): Noto Sans CJK SC (index 2 of the
#: collection; index 0 is the Japanese face) first
CJK_FONTS: tuple[tuple[str, int], ...] = (
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2),
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
)
#: Latin TrueType fonts (the CJK fallback fonts lack some Latin glyphs, e.g. digits)
LATIN_FONTS: tuple[str, ...] = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)
VERDICTS: tuple[str, ...] = ("pass", "warn", "fail", "invalid")
RESULT_COLUMNS = ["id", "station", "analyzer", "analyte", "kind", "check_id", "end", "verdict",
                  "error_fs_pct", "error_rel_pct", "error_abs", "unit", "material", "rule",
                  "rule_status", "pack", "pack_version", "needs_review", "reason_en", "reason_zh"]
#: columns the failures add: the value the rule decided on (its ``quantity``), its unit, the limit
DECIDING_COLUMNS = ["quantity", "value", "value_unit", "limit"]


@dataclass(frozen=True)
class MonthlyReport:
    """One month's verification record of a station (``station``) or the network (None)."""

    year: int
    month: int
    station: str | None
    start: dt.datetime
    end: dt.datetime
    generated_at: dt.datetime
    coverage_rate: float | None
    coverage_target: float
    coverage_verified: int
    coverage_total: int
    results: pd.DataFrame  # RESULT_COLUMNS
    per_analyzer: pd.DataFrame  # analyzer, station, checks, pass, warn, fail, invalid, ooc_hours, alerts
    failures: pd.DataFrame  # RESULT_COLUMNS + DECIDING_COLUMNS, verdict fail
    alerts: pd.DataFrame  # envcal.views.ALERT_COLUMNS
    daily: pd.DataFrame  # day (local date), pass, warn, fail, invalid
    station_names: dict[str, str] = field(default_factory=dict)  # station id -> name

    @property
    def totals(self) -> dict[str, float]:
        """checks, pass, warn, fail, invalid, ooc_hours, alerts over the scope."""
        p = self.per_analyzer
        out = {k: int(p[k].sum()) for k in ("checks", *VERDICTS, "alerts")}
        out["ooc_hours"] = float(p["ooc_hours"].sum())
        return out

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}" + (f"_{self.station}" if self.station else "_network")


def monthly_report(engine: Engine, year: int, month: int, station: str | None = None, *,
                   now: dt.datetime | None = None) -> MonthlyReport:
    """Gather one month's report.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    year, month : int
        Calendar month in :func:`envcal.views.local_tz`.
    station : str, optional
        Station id; None for the whole network.
    now : datetime, optional
        Generation time (timezone-aware), default now; coverage is evaluated at
        ``min(month end, now)``.

    Returns
    -------
    MonthlyReport
    """
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    start, end = views.month_bounds(year, month)
    an = views.analyzers_frame(engine)
    if station:
        an = an[an["station"] == station]
    ids = list(an["analyzer"])
    r = CheckResult.__table__.c
    q = (sa.select(r.id, r.station_id.label("station"), r.analyzer_id.label("analyzer"),
                   r.analyte, r.kind, r.check_id, r.end, r.verdict, r.error_fs_pct,
                   r.error_rel_pct, r.error_abs, r.unit, r.material, r.rule, r.rule_status,
                   r.pack, r.pack_version, r.needs_review, r.reason_en, r.reason_zh)
         .where(r.end >= start, r.end < end).order_by(r.end, r.analyzer_id, r.analyte))
    if station:
        q = q.where(r.station_id == station)
    with engine.connect() as conn:
        res = pd.DataFrame(conn.execute(q).mappings().all(), columns=RESULT_COLUMNS)
    cov = views.coverage_at(engine, min(end, now))
    cov_rows = [a for a in cov.analyzers if a.analyzer_id in set(ids)]
    n_cov = len(cov_rows)
    k_cov = sum(a.verified for a in cov_rows)
    periods = views.out_of_control_periods(engine, start=start, end=end)
    hours = views.out_of_control_hours(periods, start, min(end, now) if start < now else end)
    alerts = views.alerts_frame(engine, start=start, end=end, station=station)
    per = an[["analyzer", "station"]].copy()
    counts = res.groupby(["analyzer", "verdict"]).size().unstack(fill_value=0) if len(res) else \
        pd.DataFrame()
    per["checks"] = per["analyzer"].map(res.groupby("analyzer").size()).fillna(0).astype(int)
    for v in VERDICTS:
        col = counts[v] if v in counts.columns else pd.Series(dtype=int)
        per[v] = per["analyzer"].map(col).fillna(0).astype(int)
    per["ooc_hours"] = per["analyzer"].map(hours).fillna(0.0)
    per["alerts"] = per["analyzer"].map(alerts["analyzer"].value_counts()).fillna(0).astype(int)
    tz = views.local_tz()
    days = pd.date_range(start.astimezone(tz).date(), (end.astimezone(tz) - dt.timedelta(seconds=1)).date(),
                         freq="D").date
    daily = pd.DataFrame({"day": days})
    if len(res):
        d = pd.to_datetime(res["end"], utc=True).dt.tz_convert(tz).dt.date
        tab = res.assign(day=d).groupby(["day", "verdict"]).size().unstack(fill_value=0)
    else:
        tab = pd.DataFrame()
    for v in VERDICTS:
        daily[v] = daily["day"].map(tab[v] if v in tab.columns else {}).fillna(0).astype(int)
    all_an = views.analyzers_frame(engine)
    names = dict(zip(all_an["station"], all_an["station_name"], strict=True))
    return MonthlyReport(year, month, station, start, end, now,
                         k_cov / n_cov if n_cov else None, cov.target, k_cov, n_cov, res,
                         per.reset_index(drop=True),
                         deciding_values(res[res["verdict"] == "fail"].reset_index(drop=True)),
                         alerts, daily, names)


def deciding_values(res: pd.DataFrame) -> pd.DataFrame:
    """``res`` with the value each result's rule decided on: ``quantity`` (the rule's
    quantity, e.g. ``error_rel_pct``), ``value`` [``value_unit``] and ``limit``.

    A result whose pack or rule is no longer known keeps ``error_fs_pct`` [% F.S.].

    References
    ----------
    HJ 75-2017 clause 7 and table 1; HJ 355-2019 (the pack's rule decides the verdict).
    """
    from envcal.rules import RulePackError, load_pack

    packs: dict[str, object] = {}
    out = res.copy()
    quantity, value, unit, limit = [], [], [], []
    for r in res.itertuples(index=False):
        if r.pack not in packs:
            try:
                packs[r.pack] = {x.id: x for x in load_pack(r.pack).rules}
            except RulePackError:
                packs[r.pack] = {}
        rule = packs[r.pack].get(r.rule)
        q = rule.quantity if rule is not None else "error_fs_pct"
        quantity.append(q)
        value.append(getattr(r, q, None) if q in res.columns else None)
        unit.append(rule.unit if rule is not None else "% F.S.")
        limit.append(rule.limit if rule is not None else None)
    out["quantity"], out["value"], out["value_unit"], out["limit"] = quantity, value, unit, limit
    return out


# --------------------------------------------------------------------------- CSV
def report_csv(rep: MonthlyReport) -> bytes:
    """The month's check results, one row each (UTF-8 with BOM), times in UTC ISO 8601."""
    df = rep.results.copy()
    df["end"] = [e.isoformat() for e in df["end"]]
    return df.to_csv(index=False).encode("utf-8-sig")


# --------------------------------------------------------------------------- NetCDF
def report_netcdf(rep: MonthlyReport) -> bytes:
    """The month as CF-1.8 NetCDF: results (data) with ``verdict_flag`` (flags) along
    ``result``, and per-analyzer totals along ``analyzer``."""
    import xarray as xr

    res = rep.results
    code = {v: i for i, v in enumerate(VERDICTS)}
    t = np.array([pd.Timestamp(e).tz_convert("UTC").tz_localize(None).to_datetime64()
                  for e in res["end"]], dtype="datetime64[ns]")

    def s(col):
        return np.array([str(v) if v is not None and not (isinstance(v, float) and np.isnan(v)) else ""
                         for v in res[col]], dtype=object)

    def f(col):
        return pd.to_numeric(res[col], errors="coerce").to_numpy(dtype=np.float64)

    per = rep.per_analyzer
    ds = xr.Dataset(
        {
            "time": ("result", t, {"standard_name": "time", "long_name": "end of the check"}),
            "analyzer_id": ("result", s("analyzer"), {"long_name": "analyzer id"}),
            "station_id": ("result", s("station"), {"long_name": "station id"}),
            "analyte": ("result", s("analyte")),
            "check_kind": ("result", s("kind")),
            "check_id": ("result", s("check_id")),
            "material": ("result", s("material"), {"long_name": "CRM lot (certificate id)"}),
            "rule": ("result", s("rule"), {"long_name": "rule pack rule that judged the check"}),
            "error_fs_pct": ("result", f("error_fs_pct"), {"units": "percent",
                                                            "long_name": "error as % of span"}),
            "error_rel_pct": ("result", f("error_rel_pct"), {"units": "percent",
                                                              "long_name": "relative error"}),
            "verdict_flag": ("result", np.array([code.get(v, 3) for v in res["verdict"]], dtype=np.int8),
                             {"long_name": "verification verdict", "flag_values": np.arange(4, dtype=np.int8),
                              "flag_meanings": " ".join(VERDICTS)}),
            "needs_review": ("result", np.array([bool(v) for v in res["needs_review"]], dtype=np.int8),
                             {"flag_values": np.array([0, 1], dtype=np.int8),
                              "flag_meanings": "ok needs_review"}),
            "analyzer_name": ("analyzer", per["analyzer"].to_numpy(dtype=object)),
            "checks": ("analyzer", per["checks"].to_numpy(np.int32)),
            "failed": ("analyzer", per["fail"].to_numpy(np.int32)),
            "out_of_control_hours": ("analyzer", per["ooc_hours"].to_numpy(np.float64),
                                     {"units": "hours"}),
            "alerts": ("analyzer", per["alerts"].to_numpy(np.int32)),
        },
        attrs={"Conventions": "CF-1.8", "title": f"envcal monthly verification report {rep.label}",
               "institution": "envcal", "source": "envcal check results",
               "time_coverage_start": rep.start.isoformat(), "time_coverage_end": rep.end.isoformat(),
               "coverage_rate": -1.0 if rep.coverage_rate is None else rep.coverage_rate,
               "coverage_target": rep.coverage_target,
               "date_created": rep.generated_at.isoformat()},
    )
    enc = {"time": {"units": "seconds since 1970-01-01 00:00:00", "calendar": "standard",
                    "dtype": "float64"}}
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "report.nc"
        ds.to_netcdf(p, engine="netcdf4", encoding=enc)
        return p.read_bytes()


# --------------------------------------------------------------------------- PDF
_PDF = {
    "title": {"zh": "环境监测仪器月度核查报告", "en": "Monthly analyzer verification report"},
    "number": {"zh": "报告编号", "en": "Report no."},
    "scope": {"zh": "范围", "en": "Scope"},
    "network": {"zh": "全网", "en": "whole network"},
    "period": {"zh": "统计期", "en": "Period"},
    "generated": {"zh": "生成时间", "en": "Generated"},
    "coverage": {"zh": "核查覆盖率", "en": "Verification coverage"},
    "target": {"zh": "目标", "en": "target"},
    "summary": {"zh": "汇总", "en": "Summary"},
    "checks": {"zh": "核查", "en": "Checks"},
    "pass": {"zh": "合格", "en": "Pass"},
    "warn": {"zh": "预警", "en": "Warn"},
    "fail": {"zh": "不合格", "en": "Fail"},
    "invalid": {"zh": "无效", "en": "Invalid"},
    "ooc": {"zh": "失控时长 [h]", "en": "Out of control [h]"},
    "alerts": {"zh": "告警", "en": "Alerts"},
    "daily": {"zh": "每日核查结果", "en": "Check verdicts per day"},
    "per_analyzer": {"zh": "分仪器统计", "en": "Per analyzer"},
    "analyzer": {"zh": "仪器", "en": "Analyzer"},
    "station": {"zh": "站点", "en": "Station"},
    "failures": {"zh": "不合格核查明细", "en": "Failed checks"},
    "none": {"zh": "本月无不合格核查", "en": "No failed check this month"},
    "time": {"zh": "时间", "en": "Time"},
    "channel": {"zh": "通道 / 类型", "en": "Channel / kind"},
    "error": {"zh": "判定量（单位）", "en": "Deciding value (unit)"},
    "limit": {"zh": "限值", "en": "Limit"},
    "lot": {"zh": "标准物质批号", "en": "CRM lot"},
    "rule": {"zh": "规则", "en": "Rule"},
    "note": {"zh": "规则状态为“未核实”的限值尚未引用标准原文。时间为北京时间（UTC+8）。",
             "en": "Limits of rules marked 'unverified' have not yet been quoted from the primary "
                   "text. Times are China Standard Time (UTC+8)."},
    "signoff": {"zh": "签署", "en": "Sign-off"},
    "prepared": {"zh": "编制", "en": "Prepared by"},
    "reviewed": {"zh": "审核", "en": "Reviewed by"},
    "approved": {"zh": "批准", "en": "Approved by"},
    "sign": {"zh": "签名：", "en": "Signature:"},
    "date": {"zh": "日期：", "en": "Date:"},
    "page": {"zh": "第 {p} 页", "en": "Page {p}"},
}
_COLORS = {"pass": (46, 125, 50), "warn": (249, 168, 37), "fail": (198, 40, 40), "invalid": (158, 158, 158)}


class ReportFontError(RuntimeError):
    """A Chinese PDF was asked for but no CJK font is installed (the message says which to install)."""


def cjk_font() -> tuple[str, int] | None:
    """The CJK font for Chinese PDFs: (file, face index in a font collection), or None.

    ``ENVCAL_CJK_FONT`` first (a ``.ttc`` is read at face 0 unless given as ``file.ttc#N``),
    then :data:`CJK_FONTS` (Noto Sans CJK **SC**, the Simplified Chinese face of the
    collection, then Droid Sans Fallback and WenQuanYi).
    """
    env = os.environ.get("ENVCAL_CJK_FONT")
    cands: list[tuple[str, int]] = []
    if env:
        f, _, n = env.partition("#")
        cands.append((f, int(n) if n.isdigit() else 0))
    cands += [c if isinstance(c, tuple) else (c, 0) for c in CJK_FONTS]
    for p, idx in cands:
        if p and Path(p).is_file():
            return p, idx
    return None


def report_number(rep: MonthlyReport) -> str:
    """The report's number: ``ENVCAL-YYYYMM-<station or NET>`` (one report per month and scope)."""
    return f"ENVCAL-{rep.year:04d}{rep.month:02d}-{rep.station or 'NET'}"


def report_pdf(rep: MonthlyReport, lang: str = "zh") -> bytes:
    """The month as a printable PDF (A4) with charts, in ``lang`` ('zh' or 'en').

    Header with the report number, scope (station names), period and generation time; the
    coverage bar against the target; the summary; a daily verdict chart; the per-analyzer
    table and the failed checks (each with the value its rule decided on, with its unit, and
    the limit), both with headings repeated on every page; a sign-off block (编制 / 审核 /
    批准) and page numbers.

    Raises
    ------
    ReportFontError
        ``lang == "zh"`` and no CJK font is installed (:func:`cjk_font`): the report is not
        silently written in English.
    """
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    font = cjk_font() if lang == "zh" else None
    if lang == "zh" and font is None:
        raise ReportFontError("no CJK font for the Chinese PDF: install Noto Sans CJK "
                              "(sudo apt-get install -y fonts-noto-cjk) or set ENVCAL_CJK_FONT")
    cjk_any = font or cjk_font()

    def L(k: str, **kw) -> str:
        s = _PDF[k][lang]
        return s.format(**kw) if kw else s

    class _Doc(FPDF):
        def footer(self) -> None:
            self.set_y(-11)
            setf(7)
            self.set_text_color(110, 110, 110)
            self.cell(0, 5, f"{report_number(rep)} · " + L("page", p=self.page_no()), align="C")
            self.set_text_color(0, 0, 0)

    pdf = _Doc(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(True, margin=16)
    latin = next((p for p in LATIN_FONTS if Path(p).is_file()), None)
    if cjk_any and (cjk_any[0].endswith(".ttc") or lang == "zh" or latin is None):
        # Noto Sans CJK has every Latin glyph: one face for everything
        pdf.add_font("cjk", "", cjk_any[0], collection_font_number=cjk_any[1])
        face = "cjk"
        if latin and not cjk_any[0].endswith(".ttc"):
            # Droid Sans Fallback lacks some Latin glyphs: Latin face first, CJK as fallback
            pdf.add_font("latin", "", latin)
            pdf.set_fallback_fonts(["cjk"])
            face = "latin"
    elif latin:
        pdf.add_font("latin", "", latin)
        face = "latin"
    else:
        face = "Helvetica"
    unicode_ok = face != "Helvetica"

    def txt(s: object) -> str:
        s = "" if s is None else str(s)
        return s if unicode_ok else s.encode("latin-1", "replace").decode("latin-1")

    def setf(size: float) -> None:
        pdf.set_font(face, "", size)

    tz = views.local_tz()
    names = rep.station_names
    pdf.add_page()
    pdf.set_fill_color(11, 61, 110)
    pdf.rect(0, 0, 210, 24, style="F")
    pdf.set_text_color(255, 255, 255)
    setf(16)
    pdf.set_xy(12, 5)
    pdf.cell(0, 9, txt(L("title")))
    setf(9)
    pdf.set_xy(12, 14)
    pdf.cell(0, 6, txt(f"{L('number')}: {report_number(rep)}"))
    pdf.set_text_color(0, 0, 0)
    setf(10)
    pdf.set_xy(12, 30)
    scope = f"{rep.station} {names.get(rep.station, '')}" if rep.station else L("network")
    pdf.multi_cell(0, 6, txt(f"{L('scope')}: {scope}    {L('period')}: {rep.year:04d}-{rep.month:02d} "
                             f"({rep.start.astimezone(tz):%Y-%m-%d} – "
                             f"{(rep.end.astimezone(tz) - dt.timedelta(seconds=1)):%Y-%m-%d})\n"
                             f"{L('generated')}: {rep.generated_at.astimezone(tz):%Y-%m-%d %H:%M}"))
    # coverage bar
    y = pdf.get_y() + 4
    setf(12)
    pdf.set_xy(12, y)
    rate = rep.coverage_rate
    pdf.cell(0, 7, txt(f"{L('coverage')}: {'—' if rate is None else f'{rate:.1%}'} "
                       f"({rep.coverage_verified}/{rep.coverage_total}), {L('target')} "
                       f"≥ {rep.coverage_target:.0%}"))
    y += 9
    pdf.set_fill_color(230, 234, 238)
    pdf.rect(12, y, 186, 6, style="F")
    if rate is not None:
        ok = rate >= rep.coverage_target
        pdf.set_fill_color(*(_COLORS["pass"] if ok else _COLORS["fail"]))
        pdf.rect(12, y, 186 * rate, 6, style="F")
    pdf.set_draw_color(0, 0, 0)
    xt = 12 + 186 * rep.coverage_target
    pdf.line(xt, y - 1.5, xt, y + 7.5)
    # summary: one table, labels over values
    pdf.set_xy(12, y + 10)
    setf(12)
    pdf.cell(0, 7, txt(L("summary")), new_x="LMARGIN", new_y="NEXT")
    tot = rep.totals
    keys = [("checks", tot["checks"]), ("pass", tot["pass"]), ("warn", tot["warn"]),
            ("fail", tot["fail"]), ("invalid", tot["invalid"]),
            ("ooc", f"{tot['ooc_hours']:.1f}"), ("alerts", tot["alerts"])]
    setf(9)
    head_style = FontFace(fill_color=(235, 240, 245))
    pdf.set_x(12)
    pdf.set_fill_color(255, 255, 255)
    with pdf.table(cell_fill_mode="NONE", width=186, text_align="CENTER", headings_style=head_style,
                   line_height=6) as table:
        row = table.row()
        for k, _v in keys:
            row.cell(txt(L(k)))
        row = table.row()
        for _k, v in keys:
            row.cell(txt(v))
    # daily stacked bars
    y = pdf.get_y() + 4
    setf(12)
    pdf.set_xy(12, y)
    pdf.cell(0, 7, txt(L("daily")))
    y += 8
    h = 40
    d = rep.daily
    n = max(len(d), 1)
    top = max(int(d[list(VERDICTS)].sum(axis=1).max()) if len(d) else 0, 1)
    pdf.set_draw_color(160, 160, 160)
    pdf.line(20, y + h, 198, y + h)
    pdf.line(20, y, 20, y + h)
    setf(7)
    pdf.set_xy(8, y - 2)
    pdf.cell(11, 4, str(top), align="R")
    pdf.set_xy(8, y + h - 2)
    pdf.cell(11, 4, "0", align="R")
    bw = 178 / n
    for i, (_, row) in enumerate(d.iterrows()):
        base = y + h
        for v in VERDICTS:
            cnt = int(row[v])
            if cnt:
                bh = h * cnt / top
                pdf.set_fill_color(*_COLORS[v])
                pdf.rect(20 + i * bw + 0.3, base - bh, max(bw - 0.6, 0.2), bh, style="F")
                base -= bh
        if i % 5 == 0:
            pdf.set_xy(20 + i * bw - 3, y + h + 0.5)
            pdf.cell(8, 4, f"{row['day']:%m-%d}", align="C")
    lx = 20
    for v in VERDICTS:
        pdf.set_fill_color(*_COLORS[v])
        pdf.rect(lx, y + h + 6, 3, 3, style="F")
        pdf.set_xy(lx + 4, y + h + 5.5)
        pdf.cell(20, 4, txt(L(v)))
        lx += 26
    # per analyzer
    pdf.set_xy(12, y + h + 13)
    setf(12)
    pdf.cell(0, 7, txt(L("per_analyzer")), new_x="LMARGIN", new_y="NEXT")
    setf(8)
    cols = ["analyzer", "station", "checks", "pass", "warn", "fail", "invalid", "ooc", "alerts"]
    red = FontFace(color=_COLORS["fail"])
    pdf.set_fill_color(255, 255, 255)
    with pdf.table(cell_fill_mode="NONE", width=186, col_widths=(30, 44, 14, 14, 14, 14, 14, 22, 14),
                   headings_style=head_style, repeat_headings=1, line_height=5,
                   text_align=("LEFT", "LEFT", *["CENTER"] * 7)) as table:
        row = table.row()
        for k in cols:
            row.cell(txt(L(k)))
        for _, r in rep.per_analyzer.iterrows():
            row = table.row()
            vals = [r["analyzer"], names.get(r["station"], r["station"]), r["checks"], r["pass"],
                    r["warn"], r["fail"], r["invalid"], f"{r['ooc_hours']:.1f}", r["alerts"]]
            for k, v in zip(cols, vals, strict=True):
                bad = k in ("fail", "ooc") and str(v) not in ("0", "0.0")
                row.cell(txt(v), style=red if bad else None)
    # failures
    pdf.ln(3)
    setf(12)
    pdf.cell(0, 7, txt(L("failures")), new_x="LMARGIN", new_y="NEXT")
    setf(8)
    if not len(rep.failures):
        pdf.cell(0, 6, txt(L("none")), new_x="LMARGIN", new_y="NEXT")
    else:
        fc = ["time", "analyzer", "channel", "error", "limit", "lot", "rule"]
        pdf.set_fill_color(255, 255, 255)
        with pdf.table(cell_fill_mode="NONE", width=186, col_widths=(20, 28, 22, 24, 22, 38, 32),
                       headings_style=head_style, repeat_headings=1, line_height=5) as table:
            row = table.row()
            for k in fc:
                row.cell(txt(L(k)))
            for r in rep.failures.itertuples(index=False):
                row = table.row()
                lim = "—" if r.limit is None or pd.isna(r.limit) else f"±{r.limit:g} {r.value_unit}"
                vals = [f"{pd.Timestamp(r.end).tz_convert(tz):%m-%d %H:%M}", r.analyzer,
                        f"{r.analyte} {r.kind}", fmt_value(r.value, r.value_unit), lim,
                        r.material if isinstance(r.material, str) else "—", r.rule or "—"]
                for v in vals:
                    row.cell(txt(v))
    pdf.ln(2)
    setf(7)
    pdf.set_text_color(90, 90, 90)
    pdf.multi_cell(0, 4, txt(L("note")), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    # sign-off block
    if pdf.will_page_break(34):
        pdf.add_page()
    pdf.ln(4)
    setf(11)
    pdf.cell(0, 7, txt(L("signoff")), new_x="LMARGIN", new_y="NEXT")
    setf(9)
    pdf.set_fill_color(255, 255, 255)
    with pdf.table(cell_fill_mode="NONE", width=186, line_height=8, headings_style=head_style,
                   col_widths=(22, 100, 64)) as table:
        row = table.row()
        for k in ("", "sign", "date"):
            row.cell(txt(L(k)) if k else "")
        for k in ("prepared", "reviewed", "approved"):
            row = table.row()
            row.cell(txt(L(k)))
            row.cell("")
            row.cell("")
    out = pdf.output()
    return bytes(out) if not isinstance(out, io.BytesIO) else out.getvalue()


def fmt_value(v: float | None, unit: str | None) -> str:
    """A deciding value with its sign and unit, e.g. ``+15.60 %`` ('—' when missing)."""
    if v is None or pd.isna(v):
        return "—"
    return f"{float(v):+.2f} {unit or ''}".strip()
