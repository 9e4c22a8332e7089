import datetime as dt
import json
import math

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from envcal.models import AuditLog, RuleConfirmation
from envcal.registry import load_registry
from envcal.rules import (
    RULES_DIR,
    Rule,
    RulePackError,
    load_all,
    load_pack,
    pack_names,
    validate_registry_packs,
)
from envcal.rules import confirmations as confirmed
from envcal.rules.confirmations import confirm_rule

SHIPPED = {"hj75_2017", "hj355_2019", "hj817_2018", "hj818_2018", "hj915_2017",
           "cfr40_75", "cfr40_60f", "cfr40_58a"}

GOOD = """
name = "testpack"
version = "1.0"
standard = "TEST 1-2026"
title_zh = "测试"
title_en = "test"
molar_volume = 22.4

[plateau]
window = 10
max_std = 0.005
max_slope = 0.001
min_n = 5

[[rules]]
id = "t.zero"
check_kind = "zero"
analytes = ["SO2"]
quantity = "drift_fs_pct"
limit = 2.5
warn = 2.0
unit = "% F.S."
frequency_h = 24
consequence = "data invalid"
source = { standard = "TEST 1-2026", clause = "1.1" }
status = "unverified"
title_zh = "零点"
title_en = "zero"

[[out_of_control]]
id = "t.ooc"
kind = "single"
factor = 1.0
rules = ["t.zero"]
consequence = "data invalid"
source = { standard = "TEST 1-2026", clause = "1.2" }
close = "same_kind"
close_source = { standard = "TEST 1-2026", clause = "1.3" }
status = "unverified"
"""


def _write(tmp_path, text, name="testpack"):
    p = tmp_path / f"{name}.toml"
    p.write_text(text, encoding="utf-8")
    return p


def _rule(limit=2.5, warn=2.0) -> Rule:
    return Rule(id="x.rule", check_kind="zero", analytes=["SO2"], quantity="drift_fs_pct",
                limit=limit, warn=warn, unit="% F.S.", consequence="c",
                source={"standard": "S", "clause": "1"}, status="unverified",
                title_zh="z", title_en="e")


# ------------------------------------------------------------------ shipped packs
def test_rules_every_shipped_pack_loads():
    packs = load_all()
    assert set(packs) == SHIPPED
    for name, p in packs.items():
        assert p.name == name
        assert p.effective_version.startswith(p.version + "+")
        assert len(p.effective_version.split("+")[1]) == 12
        assert p.rules
        # HJ formulas use 22.4 L/mol, the CFR packs the exact 22.414 (DESIGN.md §5)
        assert p.molar_volume == (22.4 if name.startswith("hj") else 22.414)


def test_rules_every_registry_analyzer_has_a_pack(registry):
    validate_registry_packs(registry)  # raises on a missing or malformed pack
    used = {a.rule_pack for a in registry.analyzers.values()}
    assert used <= set(pack_names())
    assert used == {"hj75_2017", "hj355_2019", "hj817_2018", "hj818_2018", "hj915_2017"}


def test_rules_each_rule_has_source_and_status():
    for p in load_all().values():
        items = list(p.rules) + list(p.out_of_control)
        if p.statistics:
            items += [p.statistics, *p.statistics.limits]
        for r in items:
            assert r.source.standard.strip() and r.source.clause.strip()
            assert r.status in ("confirmed", "unverified")
            if r.status == "confirmed":
                assert r.quote and len(r.quote) > 20
        for r in p.rules:
            assert r.consequence.strip() and r.title_zh.strip() and r.title_en.strip()
            assert 0 < r.warn <= r.limit


def test_rules_rules_for_and_required_checks():
    p = load_pack("hj75_2017")
    assert [r.id for r in p.rules_for("zero", "SO2")] == ["hj75.gas.zero_drift"]
    assert [r.id for r in p.rules_for("span", "dust")] == ["hj75.dust.span_drift"]
    assert p.rules_for("membrane", "SO2") == []
    with pytest.raises(ValueError, match="unknown check kind 'bogus'"):
        p.rules_for("bogus", "SO2")
    assert p.required_checks("SO2") == [("span", dt.timedelta(hours=24)),
                                         ("zero", dt.timedelta(hours=24))]
    # velocity: only the zero check has a frequency in the pack
    assert p.required_checks("velocity") == [("zero", dt.timedelta(hours=24))]
    assert p.required_checks("flue_temp") == []
    assert p.rule("hj75.dust.zero_drift").limit == 2.0
    with pytest.raises(KeyError, match="no rule 'nope'"):
        p.rule("nope")


def test_rules_out_of_control_conditions_cfr60f():
    p = load_pack("cfr40_60f")
    conds = {c.id: c for c in p.out_of_control_for("cfr60f.gas.cd_zero")}
    assert set(conds) == {"cfr60f.ooc.2x5", "cfr60f.ooc.4x1"}
    rule = p.rule("cfr60f.gas.cd_zero")
    assert (conds["cfr60f.ooc.2x5"].kind, conds["cfr60f.ooc.2x5"].days) == ("consecutive", 5)
    assert conds["cfr60f.ooc.2x5"].threshold(rule) == 5.0   # 2 x 2.5 % of span
    assert conds["cfr60f.ooc.4x1"].threshold(rule) == 10.0  # 4 x 2.5 % of span
    cfr75 = load_pack("cfr40_75")
    (ce,) = cfr75.out_of_control_for("cfr75.gas.ce_span")
    assert ce.threshold(cfr75.rule("cfr75.gas.ce_span")) == 5.0  # App. B §2.1.4: 5.0 % of span


def test_rules_out_of_control_close_per_pack():
    """Every shipped condition says how its period closes, with the clause saying so."""
    close = {c.id: c.close for p in load_all().values() for c in p.out_of_control}
    assert close == {"hj75.ooc.drift": "same_kind", "cfr60f.ooc.2x5": "all_kinds",
                     "cfr60f.ooc.4x1": "all_kinds", "cfr60f.ooc.cga": "same_kind",
                     "cfr75.ooc.daily_ce": "all_kinds", "cfr75.ooc.linearity": "same_kind"}
    for p in load_all().values():
        for c in p.out_of_control:
            assert c.close_source.standard == c.source.standard and c.close_source.clause.strip()


def test_rules_statistics_block_cfr58():
    st = load_pack("cfr40_58a").statistics
    assert st is not None
    assert (st.cv_confidence, st.bias_confidence) == (0.90, 0.95)
    assert st.limit_for("O3").cv_ub == 7.0
    assert st.limit_for("SO2").bias_ub == 10.0
    assert st.limit_for("PM2.5") is None


# ------------------------------------------------------------------ strict loading
@pytest.mark.parametrize(
    "old,new,message",
    [
        ('version = "1.0"', 'version = "1.0"\ncolour = "red"', r"testpack\.toml: colour: unknown key"),
        ('title_zh = "零点"', 'title_zh = "零点"\ncolour = 1',
         r"testpack\.toml: rules\[0\]\.colour \(id='t\.zero'\): unknown key"),
        ("window = 10", "window = 10\nfoo = 1", r"testpack\.toml: plateau\.foo: unknown key"),
        ('analytes = ["SO2"]', 'analytes = ["XYZ"]', r"testpack\.toml: rules\[0\]\.analytes.*unknown analyte 'XYZ'"),
        ('check_kind = "zero"', 'check_kind = "sparkle"', r"testpack\.toml: rules\[0\]\.check_kind"),
        ('quantity = "drift_fs_pct"', 'quantity = "vibes"', r"testpack\.toml: rules\[0\]\.quantity"),
        ('kind = "single"', 'kind = "sometimes"', r"testpack\.toml: out_of_control\[0\]\.kind"),
        ('close = "same_kind"', 'close = "any_kind"', r"testpack\.toml: out_of_control\[0\]\.close"),
        ('close = "same_kind"\n', "", r"testpack\.toml: out_of_control\[0\]\.close.*required field is missing"),
        ('close_source = { standard = "TEST 1-2026", clause = "1.3" }\n', "",
         r"testpack\.toml: out_of_control\[0\]\.close_source.*required field is missing"),
        ("warn = 2.0", "warn = 3.0", r"testpack\.toml: rules\[0\].*warn \(3\.0\) must not exceed limit"),
        ("limit = 2.5", "limit = -1.0", r"testpack\.toml: rules\[0\]\.limit.*greater than 0"),
        ('status = "unverified"\ntitle_zh', 'status = "confirmed"\ntitle_zh',
         r"testpack\.toml: rules\[0\].*needs a 'quote'"),
        ('unit = "% F.S."', 'unit = "%"', r"testpack\.toml: rules\[0\].*unit '%' does not fit quantity 'drift_fs_pct'"),
        ('rules = ["t.zero"]', 'rules = ["t.nope"]', r"testpack\.toml: .*unknown rule id 't\.nope'"),
        ('source = { standard = "TEST 1-2026", clause = "1.1" }\n', "",
         r"testpack\.toml: rules\[0\]\.source.*required field is missing"),
        ('name = "testpack"', 'name = "otherpack"', r"testpack\.toml: name: 'otherpack' does not match"),
        ("molar_volume = 22.4", "molar_volume = 24.5x", r"testpack\.toml: not valid TOML"),
    ],
)
def test_rules_malformed_pack_names_file_and_key(tmp_path, old, new, message):
    assert old in GOOD
    _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(RulePackError, match=message):
        load_pack("testpack", directory=tmp_path)


def test_rules_duplicate_rule_ids_refused(tmp_path):
    start = GOOD.index("[[rules]]")
    end = GOOD.index("[[out_of_control]]")
    _write(tmp_path, GOOD[:end] + GOOD[start:end] + GOOD[end:])
    with pytest.raises(RulePackError, match=r"testpack\.toml: .*duplicate rule id 't\.zero'"):
        load_pack("testpack", directory=tmp_path)


def test_rules_missing_pack_and_bad_name(tmp_path):
    with pytest.raises(RulePackError, match=r"no such rule pack 'absent' \(available: testpack\)"):
        _write(tmp_path, GOOD)
        load_pack("absent", directory=tmp_path)
    with pytest.raises(RulePackError, match="invalid rule pack name"):
        load_pack("../hj75_2017")


def test_rules_validate_registry_names_analyzer_and_pack(tmp_path):
    reg_text = (
        '[[stations]]\nid = "S1"\nname = "s"\nkind = "flue_gas"\nlat = 30.0\nlon = 120.0\n'
        'operator = "op"\n\n[[analyzers]]\nid = "A1"\nstation = "S1"\nmodel = "m"\n'
        'serial = "x"\nrule_pack = "hj75_2071"\n'
        'channels = [{ analyte = "SO2", unit = "mg/m3", span = 200.0 }]\n')
    reg_file = tmp_path / "reg.toml"
    reg_file.write_text(reg_text, encoding="utf-8")
    with pytest.raises(RulePackError, match=r"analyzer 'A1': rule_pack 'hj75_2071': .*no such rule pack"):
        validate_registry_packs(load_registry(reg_file))
    # a pack that exists but covers none of the analyzer's channels is also an error
    reg_file.write_text(reg_text.replace("hj75_2071", "hj355_2019"), encoding="utf-8")
    with pytest.raises(RulePackError, match=r"analyzer 'A1': rule_pack 'hj355_2019': no rule covers"):
        validate_registry_packs(load_registry(reg_file))
    # and a malformed pack is reported with analyzer, pack, file and key
    packs = tmp_path / "packs"
    packs.mkdir()
    _write(packs, GOOD.replace('version = "1.0"', 'version = "1.0"\ncolour = 1'))
    reg_file.write_text(reg_text.replace("hj75_2071", "testpack"), encoding="utf-8")
    with pytest.raises(RulePackError, match=r"analyzer 'A1': rule_pack 'testpack': .*testpack\.toml: colour: unknown key"):
        validate_registry_packs(load_registry(reg_file), directory=packs)


# ------------------------------------------------------------------ verdicts
@pytest.mark.parametrize(
    "value,verdict",
    [(0.0, "pass"), (1.99, "pass"), (2.0, "pass"), (-2.0, "pass"),       # |q| <= warn
     (2.0000001, "warn"), (2.5, "warn"), (-2.5, "warn"),                 # warn < |q| <= limit
     (2.5000001, "fail"), (-2.6, "fail"), (1e9, "fail"),                 # |q| > limit
     (math.nan, "invalid"), (math.inf, "invalid"), (-math.inf, "invalid"), (None, "invalid")],
)
def test_rules_verdict_boundaries(value, verdict):
    assert _rule().verdict(value) == verdict


def test_rules_verdict_warn_equal_limit_has_no_warn_band():
    r = _rule(limit=10.0, warn=10.0)
    assert (r.verdict(10.0), r.verdict(10.0001)) == ("pass", "fail")


def test_rules_verdict_shipped_hj75_example():
    # SO2 zero reading moved from 1.0 to 5.6 mg/m3 on a 200 mg/m3 span:
    # Z = (5.6 - 1.0) / 200 x 100 = 2.3 % F.S. -> above warn 2.0, within limit 2.5
    rule = load_pack("hj75_2017").rules_for("zero", "SO2")[0]
    assert rule.verdict((5.6 - 1.0) / 200.0 * 100.0) == "warn"
    assert rule.verdict((6.2 - 1.0) / 200.0 * 100.0) == "fail"   # 2.6 % F.S.


# ------------------------------------------------------------------ versions
def test_rules_effective_version_changes_with_file(tmp_path):
    _write(tmp_path, GOOD)
    v1 = load_pack("testpack", directory=tmp_path).effective_version
    assert load_pack("testpack", directory=tmp_path).effective_version == v1  # stable
    _write(tmp_path, GOOD + "\n# a comment changes the bytes\n")
    v2 = load_pack("testpack", directory=tmp_path).effective_version
    _write(tmp_path, GOOD.replace("limit = 2.5", "limit = 3.0"))
    v3 = load_pack("testpack", directory=tmp_path).effective_version
    assert len({v1, v2, v3}) == 3
    assert all(v.startswith("1.0+") for v in (v1, v2, v3))


# ------------------------------------------------------------------ confirmations
def test_rules_confirmation_overlay(engine):
    plain = load_pack("hj75_2017")
    assert confirmed.load_pack("hj75_2017", engine).effective_version == plain.effective_version
    citation = "TEST CITATION (not the primary text): HJ 75-2017 clause x.y"
    confirm_rule(engine, "hj75_2017", "hj75.gas.zero_drift", citation, "alice")
    confirm_rule(engine, "hj75_2017", "hj75.gas.zero_drift", citation, "alice")  # idempotent
    p = confirmed.load_pack("hj75_2017", engine)
    r = p.rule("hj75.gas.zero_drift")
    assert (r.status, r.quote) == ("confirmed", citation)
    assert r.confirmation.by == "alice"
    assert r.confirmation.at.tzinfo is not None
    assert p.rule("hj75.gas.span_drift").status == "unverified"
    assert p.counts() == {"confirmed": 1, "unverified": 5}
    assert p.effective_version.startswith(plain.effective_version + ".c")
    # the cached file pack itself is untouched
    assert load_pack("hj75_2017").rule("hj75.gas.zero_drift").status == "unverified"
    with Session(engine) as s:
        rows = s.exec(select(RuleConfirmation)).all()
        assert len(rows) == 1 and rows[0].confirmed_by == "alice"
        actions = [a.action for a in s.exec(select(AuditLog).order_by(AuditLog.id))]
        assert actions == ["rule.confirm", "rule.reconfirm"]


def test_rules_confirmation_lapses_when_rule_edited(sqlite_engine, tmp_path):
    _write(tmp_path, GOOD)
    confirm_rule(sqlite_engine, "testpack", "t.zero", "TEST CITATION clause 1.1", "bob",
                 directory=tmp_path)
    assert confirmed.load_pack("testpack", sqlite_engine, tmp_path).rule("t.zero").status == "confirmed"
    _write(tmp_path, GOOD.replace("limit = 2.5", "limit = 3.0"))
    assert confirmed.load_pack("testpack", sqlite_engine, tmp_path).rule("t.zero").status == "unverified"


def test_rules_confirm_refuses_unknown_rule_and_empty_citation(sqlite_engine):
    with pytest.raises(RulePackError, match="no rule 'hj75.nope'"):
        confirm_rule(sqlite_engine, "hj75_2017", "hj75.nope", "a long enough citation", "x")
    with pytest.raises(RulePackError, match="citation"):
        confirm_rule(sqlite_engine, "hj75_2017", "hj75.gas.zero_drift", "  ", "x")
    with pytest.raises(RulePackError, match="by:"):
        confirm_rule(sqlite_engine, "hj75_2017", "hj75.gas.zero_drift", "a long enough citation", "")


# ------------------------------------------------------------------ command line
def test_rules_cli_list_show_confirm(tmp_path):
    from envcal.cli import app

    runner = CliRunner()
    db_file = tmp_path / "cli.db"
    db = f"sqlite:///{db_file}"
    res = runner.invoke(app, ["rules", "list", "--json", "--db", db])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert set(rows) == SHIPPED
    assert rows["hj75_2017"]["unverified"] == 6
    assert not db_file.exists()  # listing does not create a database

    res = runner.invoke(app, ["rules", "confirm", "cfr40_60f", "cfr60f.gas.cd_span",
                              "--citation", "TEST CITATION Proc. 1 §4.1", "--by", "carol",
                              "--db", db])
    assert res.exit_code == 0, res.output
    assert "confirmed cfr40_60f/cfr60f.gas.cd_span by carol" in res.output

    res = runner.invoke(app, ["rules", "show", "cfr40_60f", "--json", "--db", db])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    by_id = {r["id"]: r for r in doc["rules"]}
    assert by_id["cfr60f.gas.cd_span"]["status"] == "confirmed"
    assert by_id["cfr60f.gas.cd_span"]["confirmation"]["by"] == "carol"
    assert by_id["cfr60f.gas.cd_zero"]["status"] == "unverified"
    assert ".c" in doc["effective_version"]
    assert [c["id"] for c in doc["out_of_control"]] == ["cfr60f.ooc.2x5", "cfr60f.ooc.4x1",
                                                         "cfr60f.ooc.cga"]

    res = runner.invoke(app, ["rules", "show", "nope", "--db", db])
    assert res.exit_code == 2
    assert "no such rule pack 'nope'" in res.output


def test_rules_packs_ship_as_package_data():
    import tomllib

    assert (RULES_DIR / "hj75_2017.toml").is_file()
    pyproject = tomllib.loads((RULES_DIR.parents[1] / "pyproject.toml").read_text("utf-8"))
    assert "rules/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["envcal"]
