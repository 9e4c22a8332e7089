"""A stale sign-in: every rerun of the real app re-reads the account (AppTest)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from envcal.models import RuleConfirmation
from envcal.ui.common import SESSION_KEY
from envcal.users import Actor, add_user, set_disabled

APP = str(Path(__file__).resolve().parents[2] / "app_streamlit.py")
RULE = "hj75_2017/hj75.gas.span_drift"


def _rules_page(url: str, monkeypatch) -> AppTest:
    monkeypatch.setenv("ENVCAL_DB", url)
    monkeypatch.setenv("ENVCAL_REFRESH_S", "3600")
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["lang"] = "zh"
    at.session_state[SESSION_KEY] = Actor("admin", "admin")
    at.run()
    return at.switch_page("envcal/ui/pages/rules.py").run()


def _confirm(at: AppTest) -> AppTest:
    at.selectbox(key="rule_pick").select(RULE)
    at.text_area(key="rule_citation").input("HJ 75-2017 表 1（引文测试）")
    return at


def _confirmations(eng) -> int:
    with eng.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(RuleConfirmation)).scalar_one()


def test_session_demoted_admin_cannot_confirm_at_next_interaction(seeded_fresh, monkeypatch):
    url, eng, _ = seeded_fresh
    at = _confirm(_rules_page(url, monkeypatch))
    # meanwhile another admin demotes her to viewer
    add_user(eng, "admin", "viewer", "new-password-1", actor="admin2", replace=True)
    buttons = [b for b in at.button if b.label == "确认"]
    assert buttons  # the form was on her screen
    buttons[0].click().run()
    assert not at.exception
    assert _confirmations(eng) == 0
    assert at.session_state[SESSION_KEY] == Actor("admin", "viewer")
    assert not [b for b in at.button if b.label == "确认"]


def test_session_disabled_account_signed_out_at_next_interaction(seeded_fresh, monkeypatch):
    url, eng, _ = seeded_fresh
    at = _confirm(_rules_page(url, monkeypatch))
    set_disabled(eng, "admin", True, actor=Actor("root", "admin"))
    [b for b in at.button if b.label == "确认"][0].click().run()
    assert _confirmations(eng) == 0
    assert SESSION_KEY not in at.session_state


def test_session_absolute_lifetime_despite_activity(seeded, monkeypatch):
    url = seeded[0]
    monkeypatch.setenv("ENVCAL_DB", url)
    monkeypatch.setenv("ENVCAL_SESSION_MAX_HOURS", "12")
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[SESSION_KEY] = Actor("staff", "staff")
    at.session_state["envcal_signed_in_at"] = 0.0  # signed in long ago, active ever since
    at.run()
    assert SESSION_KEY not in at.session_state
