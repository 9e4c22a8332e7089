"""The app's Devices page against a running gateway: online state, commands for staff only."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from envcal.db import make_engine
from envcal.ui.common import SESSION_KEY
from envcal.users import Actor, add_user
from tests.gateway.support import MN17, ROOT, STATIONS, SocketDau, answering, data_frame, minute
from tests.support.mqtt_ingest import count

APP = str(ROOT / "app_streamlit.py")


def _page(monkeypatch, url: str, broker_url: str, role: str) -> AppTest:
    monkeypatch.setenv("ENVCAL_DB", url)
    monkeypatch.setenv("ENVCAL_BROKER", broker_url)
    monkeypatch.setenv("ENVCAL_STATIONS", str(STATIONS))
    eng = make_engine(url)
    add_user(eng, role, role, "a long enough demo password")  # the app re-reads the account
    eng.dispose()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["lang"] = "en"
    at.session_state[SESSION_KEY] = Actor(role, role)
    at.run()
    return at.switch_page("envcal/ui/pages/devices.py").run()


def test_devices_page_staff_sends_calibration(mosquitto, gateway, gw_engine, sqlite_url, monkeypatch):
    dau = SocketDau(gateway.address, on_command=answering())
    dau.send(data_frame(MN17, minute(0), 1.0))
    dau.wait(lambda f: f.cn == "9014")
    at = _page(monkeypatch, sqlite_url, mosquitto.url, "staff")
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    row = table[table["MN"] == MN17].iloc[0]
    assert row["State"] == "online" and row["Version"] == "2017"
    at.selectbox(key="dv_mn").set_value(MN17)
    at.selectbox(key="dv_cn").set_value("3011")
    at.text_input(key="dv_polid").input("a21026")
    [b for b in at.button if b.label == "Send"][0].click().run()
    assert not at.exception, at.exception
    assert any("Command 3011 done" in s.value for s in at.success), [e.value for e in at.error]
    assert dau.wait(lambda f: f.cn == "3011").fields["PolId"] == "a21026"
    assert count(gw_engine, "audit_log", "where action = 'device.command' and actor = 'staff'") == 1
    dau.close()


def test_devices_page_viewer_sees_state_but_no_commands(mosquitto, gw_engine, sqlite_url, monkeypatch):
    at = _page(monkeypatch, sqlite_url, mosquitto.url, "viewer")  # no gateway running
    assert not at.exception, at.exception
    assert any("did not answer" in i.value for i in at.info)
    assert len(at.dataframe[0].value) == 3  # the registered DAUs
    assert any("needs the staff or admin role" in c.value for c in at.caption)
    assert [b.label for b in at.button] == ["Sign out"]
