"""Real-browser test: ``streamlit run app_streamlit.py`` against a seeded database, driven
by Debian's Chromium through Playwright; screenshots of every page in both languages go
to ``tests/artifacts/``.

The accounts are made as ``envcal demo`` makes them (random passwords) and read back from
the line it prints; the test signs in with them, reloads (F5) and stays signed in, opens
a deep link, and checks that the rendered text of every page in Chinese holds no raw enum
value and no untranslated label key.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app_streamlit.py")
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

#: tall enough that a screenshot shows a whole page (Streamlit scrolls inside the page)
VIEWPORT = {"width": 1440, "height": 2400}

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def accounts(seeded):
    """The accounts as ``envcal demo`` creates and prints them (parsed from that line)."""
    from envcal.ui.seed import create_accounts, format_accounts, parse_accounts

    printed = format_accounts(create_accounts(seeded[1]))
    return parse_accounts(printed)


@pytest.fixture(scope="module")
def server(seeded, accounts, tmp_path_factory):
    url, _eng, _info = seeded
    port = _free_port()
    env = dict(os.environ, ENVCAL_DB=url, ENVCAL_REFRESH_S="600", ENVCAL_PUBLIC_PAGE="1",
               ENVCAL_ARCHIVE=str(tmp_path_factory.mktemp("archive")))
    log = tmp_path_factory.mktemp("st") / "streamlit.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
             "--client.toolbarMode", "viewer"],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + log.read_text(errors="replace")[-2000:])
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make testdeps` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _wait_idle(page) -> None:
    page.wait_for_selector("[data-testid='stApp']", timeout=30_000)
    # Streamlit marks the app "running" while the script runs
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')"
        ".getAttribute('data-test-script-state') !== 'running'", timeout=30_000)
    page.wait_for_timeout(400)


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _login(page, base: str, name: str, password: str, path: str = "") -> None:
    page.goto(base + path)
    _wait_idle(page)
    page.get_by_label("用户名").fill(name)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()
    _wait_idle(page)


def _raw_words() -> set[str]:
    """Every enum value of the domain and every label key: none may show in Chinese text."""
    from envcal.alerts import KINDS, SEVERITIES
    from envcal.alerts import STATES as ALERT_STATES
    from envcal.instruments import RESULTS
    from envcal.rules import CHECK_KINDS, QUANTITIES
    from envcal.ui.i18n import STRINGS
    from envcal.views import STATES

    words = {*KINDS, *SEVERITIES, *ALERT_STATES, *RESULTS, *CHECK_KINDS, *QUANTITIES, *STATES,
             "pass", "warn", "fail", "invalid", "gas_cylinder", "solution", "zero_material",
             "confirmed", "unverified", "valid", "expired", "revoked", "superseded",
             "flat_line", "no_data", "seq_gaps", "out_of_range", "rate_of_change", "due",
             "overdue", "nan", "none", "null"}
    return words | set(STRINGS)


TOKEN = re.compile(r"(?<![\w.\-/])([a-z][a-z0-9]*(?:[._][a-z0-9]+)*)(?![\w\-/])")


def _untranslated(page) -> list[str]:
    text = page.locator("[data-testid='stMain']").inner_text()
    text += page.locator("[data-testid='stSidebar']").inner_text()
    raw = _raw_words()
    return sorted({w for w in TOKEN.findall(text) if w in raw})


PAGES = [  # url slug, zh navigation label, zh title, en label, en title, content that must show (zh)
    ("overview", "总览", "全省监测仪器运行总览", "Overview", "Network overview", "核查覆盖率"),
    ("analyzer", "仪器详情", "仪器详情", "Analyzer detail", "Analyzer detail", "控制图"),
    ("alerts", "告警", "告警收件箱", "Alerts", "Alert inbox", "证据"),
    ("materials", "标准物质", "标准物质证书", "Reference materials", "Reference material certificates",
     "认定值与不确定度"),
    ("reports", "月度报告", "月度核查报告", "Reports", "Monthly verification report", "下载 PDF"),
    ("operators", "运营单位", "运营单位计量诚信", "Operators", "Operator metrology integrity",
     "诚信分计算公式"),
    ("rules", "核查规则", "现行核查规则", "Rules", "Rule packs in force", "确认规则"),
    ("public", "公示", "计量检定合格公示", "Public disclosure", "Public disclosure", "计量失信名单"),
]


def _open(page, label: str, title: str) -> None:
    page.locator(f"[data-testid='stSidebarNav'] a:has-text('{label}')").first.click()
    page.wait_for_selector(f"h1:has-text('{title}')", timeout=30_000)
    _wait_idle(page)


def test_browser_every_page_zh_admin_reload_and_deep_link(server, browser, accounts):
    ctx = browser.new_context(viewport=VIEWPORT, locale="zh-CN")
    page = ctx.new_page()
    role, pw = accounts["admin"]
    assert role == "admin"
    _login(page, server, "admin", pw)
    page.wait_for_selector("h1:has-text('全省监测仪器运行总览')", timeout=30_000)
    problems = {}
    for slug, label, title, _l, _t, key in PAGES:
        _open(page, label, title)
        assert page.get_by_text(key).first.is_visible(), f"{slug}: {key!r} not shown"
        assert page.locator("[data-testid='stException']").count() == 0, f"{slug}: exception"
        raw = _untranslated(page)
        if raw:
            problems[slug] = raw
        _shot(page, f"zh_{slug}")
    assert not problems, f"raw enum values / label keys in Chinese pages: {problems}"
    # F5: a new Streamlit session, still signed in (signed cookie), same page
    page.reload()
    _wait_idle(page)
    page.wait_for_selector("h1:has-text('计量检定合格公示')", timeout=30_000)
    assert page.get_by_label("密码").count() == 0
    # a deep link opens the analyzer asked for, signed in
    page.goto(server + "/analyzer?analyzer=NB-PP02-CEMS")
    _wait_idle(page)
    page.wait_for_selector("h1:has-text('仪器详情')", timeout=30_000)
    page.wait_for_selector("text=CEMS-2000B (CE-2021-1188)", timeout=30_000)  # NB-PP02-CEMS's model
    # signing out ends it: a reload shows the sign-in form
    page.get_by_role("button", name="退出登录").click()
    page.get_by_label("密码").wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    page.reload()
    page.get_by_label("密码").wait_for(timeout=30_000)
    assert page.get_by_text("当前用户").count() == 0
    ctx.close()


def test_browser_deep_link_before_sign_in_opens_after(server, browser, accounts):
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    _login(page, server, "staff", accounts["staff"][1], "/analyzer?analyzer=SX-WW01-WQ")
    page.wait_for_selector("h1:has-text('仪器详情')", timeout=30_000)
    page.wait_for_selector("text=HA-2021-2290", timeout=30_000)  # SX-WW01-WQ's serial
    ctx.close()


def test_browser_public_page_without_sign_in(server, browser):
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    page.goto(server + "/public")
    _wait_idle(page)
    page.wait_for_selector("h1:has-text('计量检定合格公示')", timeout=30_000)
    assert page.get_by_label("密码").count() == 0
    assert page.get_by_role("button").filter(has_text="登录").count() == 0
    page.wait_for_selector("text=诚信分 S = ", timeout=30_000)  # the formula, at the end of the page
    _wait_idle(page)
    _shot(page, "zh_public_signed_out")
    ctx.close()


def test_browser_wrong_password_then_viewer_in_english(server, browser, accounts):
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    page.goto(server)
    _wait_idle(page)
    page.get_by_label("用户名").fill("viewer")
    page.get_by_label("密码").fill("not-the-password")
    page.get_by_role("button", name="登录").click()
    page.wait_for_selector("text=用户名或密码错误", timeout=30_000)
    assert page.get_by_text("全省监测仪器运行总览").count() == 0
    page.get_by_label("密码").fill(accounts["viewer"][1])
    page.get_by_role("button", name="登录").click()
    page.wait_for_selector("text=全省监测仪器运行总览", timeout=30_000)
    _wait_idle(page)
    page.get_by_text("English").first.click()
    page.wait_for_selector("h1:has-text('Network overview')", timeout=30_000)
    _wait_idle(page)
    for slug, _zl, _zt, label, title, _key in PAGES:
        _open(page, label, title)
        assert page.locator("[data-testid='stException']").count() == 0, f"{slug}: exception"
        _shot(page, f"en_{slug}")
    _open(page, "Alerts", "Alert inbox")
    # a viewer sees no acknowledge form
    assert page.get_by_role("button", name="Acknowledge").count() == 0
    assert page.get_by_text("needs the staff role").first.is_visible()
    # the language survives a reload
    page.reload()
    _wait_idle(page)
    page.wait_for_selector("h1:has-text('Alert inbox')", timeout=30_000)
    ctx.close()
