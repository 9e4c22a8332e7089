"""AppTest of every page for every role, both languages, and the role-guarded actions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from envcal.models import AuditLog, Certificate, RuleConfirmation
from envcal.ui.common import SESSION_KEY
from envcal.ui.seed import DEMO_USERS
from envcal.users import Actor

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app_streamlit.py")
PAGES = {"overview": ("全省监测仪器运行总览", "Network overview"),
         "analyzer": ("仪器详情", "Analyzer detail"),
         "alerts": ("告警收件箱", "Alert inbox"),
         "materials": ("标准物质证书", "Reference material certificates"),
         "reports": ("月度核查报告", "Monthly verification report"),
         "operators": ("运营单位计量诚信", "Operator metrology integrity"),
         "rules": ("现行核查规则", "Rule packs in force")}


def _app(url: str, monkeypatch, role: str | None = None, lang: str = "zh") -> AppTest:
    monkeypatch.setenv("ENVCAL_DB", url)
    monkeypatch.setenv("ENVCAL_REFRESH_S", "3600")
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["lang"] = lang
    if role is not None:
        at.session_state[SESSION_KEY] = Actor(role, role)
    return at.run()


def _page(at: AppTest, name: str) -> AppTest:
    return at.switch_page(f"envcal/ui/pages/{name}.py").run()


def _button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r}: {[b.label for b in at.button]}"
    return found[0]


def _titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


def test_app_login_page_without_session(seeded, monkeypatch):
    at = _app(seeded[0], monkeypatch)
    assert not at.exception
    assert "环境监测仪器在线核查平台" in _titles(at)
    assert at.text_input(key="login_password") is not None
    assert not at.metric  # nothing of the data before signing in


def test_app_login_wrong_password_refused(seeded, monkeypatch):
    at = _app(seeded[0], monkeypatch)
    at.text_input(key="login_name").input("admin")
    at.text_input(key="login_password").input("wrong-password")
    _button(at, "登录").click().run()
    assert any("登录失败" in e.value for e in at.error)
    assert SESSION_KEY not in at.session_state


def test_app_login_right_password_opens_overview(seeded, monkeypatch):
    at = _app(seeded[0], monkeypatch)
    at.text_input(key="login_name").input("staff")
    at.text_input(key="login_password").input(DEMO_USERS["staff"][1])
    _button(at, "登录").click().run()
    assert not at.exception
    assert "全省监测仪器运行总览" in _titles(at)
    assert at.session_state[SESSION_KEY] == Actor("staff", "staff")


@pytest.mark.parametrize("role", ["viewer", "staff", "lab", "admin"])
def test_app_every_page_renders_for_role(seeded, monkeypatch, role):
    at = _app(seeded[0], monkeypatch, role)
    for name, (zh, _en) in PAGES.items():
        _page(at, name)
        assert not at.exception, f"{name}: {at.exception}"
        assert zh in _titles(at), f"{name}: {_titles(at)}"


def test_app_every_page_renders_in_english(seeded, monkeypatch):
    at = _app(seeded[0], monkeypatch, "admin", lang="en")
    for name, (_zh, en) in PAGES.items():
        _page(at, name)
        assert not at.exception, f"{name}: {at.exception}"
        assert en in _titles(at)


def test_app_overview_shows_kpis(seeded, monkeypatch):
    at = _app(seeded[0], monkeypatch, "viewer")
    m = {x.label: x.value for x in at.metric}
    assert m[":red[●] 失控"] == "1"  # the drifting CEMS
    assert m[":gray[●] 无数据"] == "1"  # the silent PM monitor
    assert m["核查覆盖率"] == "75.0%"  # 6 of 8: one expired record, one without checks


def test_app_viewer_cannot_ack_or_upload(seeded, monkeypatch):
    at = _page(_app(seeded[0], monkeypatch, "viewer"), "alerts")
    assert not [b for b in at.button if b.label in ("确认告警", "解决告警")]
    assert any("确认与解决需要业务人员权限" in i.value for i in at.info)
    at = _page(at, "materials")
    assert not [b for b in at.button if b.label == "校验并导入"]
    assert not [b for b in at.button if b.label == "撤销批号"]


def test_app_staff_acknowledges_alert_audited(seeded_fresh, monkeypatch):
    url, eng, _ = seeded_fresh
    at = _page(_app(url, monkeypatch, "staff"), "alerts")
    aid = at.selectbox(key="al_pick").value
    at.text_area(key="al_note").input("通知运维单位校准 SO2 量程")
    _button(at, "确认告警").click().run()
    assert not at.exception
    assert any("已记录" in s.value for s in at.success)
    assert at.text_area(key="al_note").value == ""  # the note is cleared after the action
    shown = at.dataframe[0].value
    row = shown[shown["编号"] == aid].iloc[0]
    assert row["处理人 / 时间"].startswith("确认: staff") and row["处理说明"] == "通知运维单位校准 SO2 量程"
    with eng.connect() as c:
        state = c.execute(sa.text("select state, acknowledged_by from alert where id = :i"),
                          {"i": int(aid)}).first()
        audit = c.execute(sa.select(AuditLog.action, AuditLog.actor)
                          .where(AuditLog.action == "alert.acknowledge")).all()
    assert tuple(state) == ("acknowledged", "staff")
    assert audit == [("alert.acknowledge", "staff")]


def _new_cert(**change) -> str:
    doc = json.loads((ROOT / "reference_materials/samples/gas_so2.json").read_text())
    doc.pop("attachment", None)
    doc.update({"id": "GBW(E)080123-2026-099", "lot": "2026-099"}, **change)
    return json.dumps(doc, ensure_ascii=False)


def _count_certs(eng) -> int:
    with eng.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(Certificate.__table__)).scalar()


def test_app_lab_uploads_valid_certificate(seeded_fresh, monkeypatch):
    url, eng, _ = seeded_fresh
    at = _page(_app(url, monkeypatch, "lab"), "materials")
    at.text_area(key="cert_text").input(_new_cert())
    _button(at, "校验并导入").click().run()
    assert not at.exception
    assert any("已导入 GBW(E)080123-2026-099" in s.value for s in at.success)
    with eng.connect() as c:
        row = c.execute(sa.select(Certificate.imported_by)
                        .where(Certificate.cert_id == "GBW(E)080123-2026-099")).one()
    assert row.imported_by == "lab"
    assert "GBW(E)080123-2026-099" in at.selectbox(key="cert_pick").options


def test_app_lab_upload_invalid_shows_errors_stores_nothing(seeded_fresh, monkeypatch):
    url, eng, _ = seeded_fresh
    before = _count_certs(eng)
    at = _page(_app(url, monkeypatch, "lab"), "materials")
    at.text_area(key="cert_text").input(_new_cert(expires="2026-01-01", colour="blue"))
    _button(at, "校验并导入").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("证书未导入" in e for e in errors)
    assert any("colour" in e for e in errors)  # the unknown key, named in place
    assert _count_certs(eng) == before


def test_app_admin_confirms_rule_audited(seeded_fresh, monkeypatch):
    url, eng, _ = seeded_fresh
    at = _page(_app(url, monkeypatch, "admin"), "rules")
    at.selectbox(key="rule_pick").select("hj75_2017/hj75.gas.span_drift")
    at.text_area(key="rule_citation").input("HJ 75-2017 表 1：量程漂移 ±2.5 %F.S.（引文测试）")
    _button(at, "确认").click().run()
    assert not at.exception
    assert any("已确认" in s.value for s in at.success)
    with eng.connect() as c:
        rows = c.execute(sa.select(RuleConfirmation.rule_id, RuleConfirmation.confirmed_by)).all()
    assert rows == [("hj75.gas.span_drift", "admin")]


def test_app_staff_sees_no_rule_confirmation(seeded, monkeypatch):
    at = _page(_app(seeded[0], monkeypatch, "staff"), "rules")
    assert not [b for b in at.button if b.label == "确认"]
    assert any("需要管理员权限" in c.value for c in at.caption)


def test_app_session_times_out(seeded, monkeypatch):
    monkeypatch.setenv("ENVCAL_SESSION_TIMEOUT_MIN", "30")
    monkeypatch.setenv("ENVCAL_DB", seeded[0])
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[SESSION_KEY] = Actor("staff", "staff")
    at.session_state["envcal_last_seen"] = 0.0  # long ago
    at.run()
    assert SESSION_KEY not in at.session_state
    assert any("会话已超时" in w.value for w in at.warning)
    assert not at.metric


def test_actions_enforce_roles_server_side(seeded_fresh):
    """The action functions refuse a role without the permission, whatever a page shows."""
    from envcal.ui import actions
    from envcal.users import PermissionDenied

    url, eng, _ = seeded_fresh
    viewer, staff = Actor("v", "viewer"), Actor("s", "staff")
    before = _count_certs(eng)
    with eng.connect() as c:
        states = c.execute(sa.text("select id, state from alert order by id")).all()
    assert states and all(st == "open" for _id, st in states)
    with pytest.raises(PermissionDenied):
        actions.upload_certificate(eng, viewer, _new_cert().encode())
    with pytest.raises(PermissionDenied):
        actions.upload_certificate(eng, staff, _new_cert().encode())
    with pytest.raises(PermissionDenied):
        actions.revoke_certificate(eng, staff, "GBW(E)080123-2026-017", "test")
    with pytest.raises(PermissionDenied):
        actions.acknowledge_alert(eng, viewer, 1, "note")
    with pytest.raises(PermissionDenied):
        actions.confirm_rule(eng, staff, "hj75_2017", "hj75.gas.span_drift", "a long citation")
    with pytest.raises(PermissionDenied):
        actions.acknowledge_alert(eng, None, 1, "note")
    assert _count_certs(eng) == before
    with eng.connect() as c:
        assert c.execute(sa.text("select id, state from alert order by id")).all() == states
        assert c.execute(sa.text("select revoked_at from certificate where cert_id = "
                                 "'GBW(E)080123-2026-017'")).scalar() is None


def test_app_lab_revokes_lot_with_reason(seeded_fresh, monkeypatch):
    url, eng, _ = seeded_fresh
    at = _page(_app(url, monkeypatch, "lab"), "materials")
    at.selectbox(key="cert_pick").select("GBW(E)080123-2026-017")
    at.run()
    at.text_input(key="revoke_reason").input("钢瓶压力异常，停止使用")
    _button(at, "撤销批号").click().run()
    assert not at.exception
    assert any("已撤销 GBW(E)080123-2026-017" in s.value for s in at.success)
    with eng.connect() as c:
        row = c.execute(sa.text("select revoked_by, revoked_reason from certificate where cert_id = "
                                "'GBW(E)080123-2026-017'")).first()
        review = c.execute(sa.text("select count(*) from check_result where needs_review")).scalar()
    assert tuple(row) == ("lab", "钢瓶压力异常，停止使用")
    assert review > 0


def test_ui_command_registered():
    from typer.testing import CliRunner

    from envcal.cli import app

    r = CliRunner().invoke(app, ["ui", "--help"])
    assert r.exit_code == 0
    assert "--port" in r.output and "--db" in r.output


def test_app_every_domain_value_has_a_label():
    """Every enum value the pages show has a zh and en label (no raw value in zh)."""
    from envcal.alerts import KINDS
    from envcal.certificates import CertificateDoc
    from envcal.codes import CHECK_KINDS, QUANTITIES
    from envcal.instruments import RESULTS
    from envcal.state import REASONS
    from envcal.ui.i18n import STRINGS, missing_keys

    assert missing_keys() == []
    kinds = CertificateDoc.model_fields["kind"].annotation.__args__
    need = ([f"akind.{k}" for k in KINDS] + [f"ckind.{k}" for k in CHECK_KINDS]
            + [f"qty.{q}" for q in QUANTITIES] + [f"crmkind.{k}" for k in kinds]
            + [f"vresult.{r}" for r in RESULTS] + [f"reason.{r}" for r in REASONS])
    assert [k for k in need if k not in STRINGS] == []


def test_app_public_page_needs_no_sign_in_and_is_off_by_default(seeded, monkeypatch):
    monkeypatch.setenv("ENVCAL_PUBLIC_PAGE", "1")
    at = _page(_app(seeded[0], monkeypatch), "public")
    assert not at.exception
    assert "计量检定合格公示与计量信用信息" in _titles(at)
    assert not [w for w in at.text_input if w.key == "login_password"]  # no sign-in form
    assert not at.button and not at.text_area  # nothing that changes state
    shown = " ".join(str(df.value.to_csv()) for df in at.dataframe)
    assert "admin" not in shown and "staff" not in shown  # no person or account
    assert any("诚信分 S" in c.value for c in at.caption)
    monkeypatch.setenv("ENVCAL_PUBLIC_PAGE", "0")
    at = _app(seeded[0], monkeypatch)
    with pytest.raises(ValueError):  # not registered: AppTest cannot switch to it
        at.switch_page("envcal/ui/pages/public.py").run()
    assert at.text_input(key="login_password") is not None


def test_app_overview_coverage_reasons_and_due_dates_in_chinese(seeded, monkeypatch):
    at = _app(seeded[0], monkeypatch, "viewer")
    frames = [df.value for df in at.dataframe]
    due = next(f for f in frames if "证书编号" in f.columns)
    assert set(due["状态"]) == {"即将到期", "已过期"}  # HZ-SW01-WQ soon, SX-WW01-WQ expired
    reasons = next(f for f in frames if "原因" in f.columns and "仪器" in f.columns and len(f.columns) == 2)
    text = " ".join(reasons["原因"])
    assert "已于" in text and "过期" in text and "expired" not in text
    worst = next(f for f in frames if "失控起始" in f.columns)
    row = worst[worst["仪器"] == "JX-PP01-CEMS"].iloc[0]
    assert row["失控起始"] != "—" and "天" in row["持续"]


def test_app_analyzer_deep_link_opens_the_failing_channel(seeded, monkeypatch):
    monkeypatch.setenv("ENVCAL_DB", seeded[0])
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["lang"] = "zh"
    at.session_state[SESSION_KEY] = Actor("viewer", "viewer")
    at.query_params["analyzer"] = "JX-PP01-CEMS"
    at.run()
    at.switch_page("envcal/ui/pages/analyzer.py").run()
    assert not at.exception
    assert at.selectbox(key="analyzer_pick").value == "JX-PP01-CEMS"
    assert at.selectbox(key="channel_pick").value == "SO2"  # the drifting, out-of-control one
    assert at.selectbox(key="kind_pick").value == "span"


def test_app_reports_open_on_the_last_complete_month(seeded, monkeypatch):
    import datetime as dt

    from envcal.views import local_tz

    at = _page(_app(seeded[0], monkeypatch, "viewer"), "reports")
    assert not at.exception
    today = dt.datetime.now(local_tz())
    prev = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    assert tuple(at.selectbox(key="rp_month").value) == prev
    assert any(b.label == "下载 PDF" for b in at.get("download_button"))


def test_app_lab_certificate_form_imports_or_lists_problems(seeded_fresh, monkeypatch):
    url, eng, _ = seeded_fresh
    before = _count_certs(eng)
    at = _page(_app(url, monkeypatch, "lab"), "materials")
    at.text_input(key="cf_id").input("GBW(E)080123-2026-777")
    at.text_input(key="cf_code").input("GBW(E)080123")
    at.text_input(key="cf_name").input("二氧化硫/氮气 标准气体")
    at.text_input(key="cf_producer").input("浙江示例标准气体有限公司")
    at.text_input(key="cf_lot").input("2026-777")
    _button(at, "校验表单并导入").click().run()  # no certified value: refused, named in Chinese
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("证书未导入" in e for e in errors) and any("认定值" in e for e in errors)
    assert _count_certs(eng) == before


def test_app_lab_records_instrument_verification(seeded_fresh, monkeypatch):
    from envcal.instruments import list_verification_records

    url, eng, _ = seeded_fresh
    at = _page(_app(url, monkeypatch, "lab"), "materials")
    at.selectbox(key="iv_analyzer").select("SX-WW01-WQ")
    at.text_input(key="iv_number").input("ZJJL2026-0999")
    _button(at, "校验并登记").click().run()
    assert not at.exception
    assert any("已登记 SX-WW01-WQ 的检定证书 ZJJL2026-0999" in s.value for s in at.success)
    rec = [r for r in list_verification_records(eng, "SX-WW01-WQ") if r["number"] == "ZJJL2026-0999"]
    assert rec and rec[0]["recorded_by"] == "lab"
    at = _page(_app(url, monkeypatch, "staff"), "materials")  # staff: no form
    assert not [b for b in at.button if b.label == "校验并登记"]
