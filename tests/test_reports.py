import datetime as dt
import io
import subprocess

import pandas as pd
import pytest
import xarray as xr

from envcal import reports
from envcal.alerts import list_periods
from envcal.db import init_db, make_engine
from envcal.ui.seed import seed_demo

NOW = dt.datetime(2026, 11, 27, 4, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('reports') / 'envcal.db'}")
    init_db(eng)
    seed_demo(eng, now=NOW, users=False)
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def network(demo):
    return reports.monthly_report(demo, 2026, 11, now=NOW)


def test_reports_network_totals(network):
    tot = network.totals
    assert tot["checks"] == len(network.results) > 500
    assert tot["checks"] == tot["pass"] + tot["warn"] + tot["fail"] + tot["invalid"]
    assert tot["fail"] == len(network.failures) >= 3
    assert network.coverage_rate == pytest.approx(6 / 8)
    assert tot["ooc_hours"] > 0
    assert int(network.daily[["pass", "warn", "fail", "invalid"]].to_numpy().sum()) == tot["checks"]
    assert len(network.daily) == 30


def test_reports_ooc_hours_are_the_stored_periods(demo, network):
    hours: dict[str, float] = {}
    for p in list_periods(demo):  # not overlapping, in November; an open one counts until NOW
        dur = pd.Timestamp(p["end"] or NOW) - pd.Timestamp(p["start"])
        hours[p["analyzer_id"]] = hours.get(p["analyzer_id"], 0.0) + dur.total_seconds() / 3600
    got = network.per_analyzer.set_index("analyzer")["ooc_hours"]
    assert hours and {a: h for a, h in got.items() if h > 0} == pytest.approx(hours)


def test_reports_station_scope(demo, network):
    rep = reports.monthly_report(demo, 2026, 11, "ZJ-JX-PP01", now=NOW)
    assert set(rep.results["station"]) == {"ZJ-JX-PP01"}
    assert list(rep.per_analyzer["analyzer"]) == ["JX-PP01-CEMS"]
    assert rep.totals["fail"] == int((network.results["station"] == "ZJ-JX-PP01").mul(
        network.results["verdict"] == "fail").sum())
    assert rep.label == "2026-11_ZJ-JX-PP01"


def test_reports_empty_month(demo):
    rep = reports.monthly_report(demo, 2025, 1, now=NOW)
    assert rep.totals["checks"] == 0
    assert reports.report_pdf(rep, "en").startswith(b"%PDF")


def test_reports_csv_roundtrip(network):
    data = reports.report_csv(network)
    assert data.startswith(b"\xef\xbb\xbf")  # BOM, for spreadsheet programs
    df = pd.read_csv(io.BytesIO(data), encoding="utf-8-sig")
    assert len(df) == len(network.results)
    assert {"analyzer", "verdict", "material", "rule", "rule_status"} <= set(df.columns)
    assert df["reason_zh"].str.contains("量程漂移").any()


def test_reports_netcdf_data_and_flags(network, tmp_path):
    p = tmp_path / "r.nc"
    p.write_bytes(reports.report_netcdf(network))
    with xr.open_dataset(p) as ds:
        assert ds.attrs["Conventions"] == "CF-1.8"
        assert ds.sizes["result"] == len(network.results)
        assert ds["verdict_flag"].attrs["flag_meanings"] == "pass warn fail invalid"
        assert int((ds["verdict_flag"] == 2).sum()) == network.totals["fail"]
        assert float(ds["out_of_control_hours"].sum()) == pytest.approx(network.totals["ooc_hours"])


def _pdftotext(pdf: bytes, tmp_path) -> str:
    p = tmp_path / "r.pdf"
    p.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(p), "-"], check=True,
                          capture_output=True, text=True).stdout


def test_reports_pdf_chinese_text_has_summary_numbers(network, tmp_path):
    font = reports.cjk_font()
    assert font is not None, "no CJK font: make test installs fonts-noto-cjk"
    pdf = reports.report_pdf(network, "zh")
    assert pdf.startswith(b"%PDF")
    assert b"NotoSansCJKSC" in pdf or b"DroidSans" in pdf  # the Simplified Chinese face
    text = _pdftotext(pdf, tmp_path)
    tot = network.totals
    summary = next(line for line in text.splitlines() if "核查" in line and "合格" in line
                   and "告警" in line)
    nums = text[text.index(summary) + len(summary):].split("\n", 2)[1].split()
    assert nums == [str(tot["checks"]), str(tot["pass"]), str(tot["warn"]), str(tot["fail"]),
                    str(tot["invalid"]), f"{tot['ooc_hours']:.1f}", str(tot["alerts"])]
    for word in ("报告编号", reports.report_number(network), "编制", "审核", "批准",
                 "嘉兴", "不合格核查明细"):
        assert word in text, word


def test_reports_failures_show_the_deciding_value_with_unit(network):
    f = network.failures
    assert len(f) and set(reports.DECIDING_COLUMNS) <= set(f.columns)
    for r in f.itertuples(index=False):
        assert r.value == getattr(r, r.quantity)  # the rule's own quantity, not error_fs_pct
        assert abs(r.value) > r.limit  # it is what failed
        assert r.value_unit


def test_reports_pdf_chinese_without_cjk_font_refused(network, monkeypatch):
    monkeypatch.setattr(reports, "CJK_FONTS", ())
    monkeypatch.delenv("ENVCAL_CJK_FONT", raising=False)
    with pytest.raises(reports.ReportFontError, match="fonts-noto-cjk"):
        reports.report_pdf(network, "zh")
    assert reports.report_pdf(network, "en").startswith(b"%PDF")  # English still works
