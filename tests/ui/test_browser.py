"""Real-browser test: ``streamlit run app_streamlit.py`` against a seeded database, driven
by Debian's Chromium through Playwright; screenshots go to ``tests/artifacts/``."""

from __future__ import annotations

import os
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

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(seeded, tmp_path_factory):
    url, _eng, _info = seeded
    port = _free_port()
    env = dict(os.environ, ENVCAL_DB=url, ENVCAL_REFRESH_S="600",
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
        pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
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
    page.wait_for_timeout(300)


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _login(page, base: str, name: str, password: str) -> None:
    page.goto(base)
    _wait_idle(page)
    page.get_by_label("用户名").fill(name)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()
    page.wait_for_selector("text=全省监测仪器运行总览", timeout=30_000)
    _wait_idle(page)


PAGES = [  # url slug, navigation label, page title, content that must show
    ("overview", "总览", "全省监测仪器运行总览", "核查覆盖率"),
    ("analyzer", "仪器详情", "仪器详情", "控制图"),
    ("alerts", "告警", "告警收件箱", "证据"),
    ("materials", "标准物质", "标准物质证书", "认定值与不确定度"),
    ("reports", "月度报告", "月度核查报告", "下载 PDF"),
    ("operators", "运营单位", "运营单位计量诚信", "诚信分计算公式"),
    ("rules", "核查规则", "现行核查规则", "确认规则"),
]


def _open(page, label: str, title: str) -> None:
    """Follow a sidebar link (a fresh page load would start a new, signed-out session)."""
    page.locator(f"[data-testid='stSidebarNav'] a:has-text('{label}')").first.click()
    page.wait_for_selector(f"h1:has-text('{title}')", timeout=30_000)
    _wait_idle(page)


def test_browser_every_page_zh_admin(server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 1300})
    _login(page, server, "admin", "admin-pass-2026")
    for slug, label, title, key in PAGES:
        _open(page, label, title)
        assert page.get_by_text(key).first.is_visible(), f"{slug}: {key!r} not shown"
        assert page.locator("[data-testid='stException']").count() == 0, f"{slug}: exception"
        _shot(page, f"zh_{slug}")
    page.close()


def test_browser_wrong_password_then_viewer_in_english(server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 1300})
    page.goto(server)
    _wait_idle(page)
    page.get_by_label("用户名").fill("viewer")
    page.get_by_label("密码").fill("not-the-password")
    page.get_by_role("button", name="登录").click()
    page.wait_for_selector("text=登录失败", timeout=30_000)
    assert page.get_by_text("全省监测仪器运行总览").count() == 0
    page.get_by_label("密码").fill("viewer-pass-2026")
    page.get_by_role("button", name="登录").click()
    page.wait_for_selector("text=全省监测仪器运行总览", timeout=30_000)
    _wait_idle(page)
    page.get_by_text("English").first.click()
    page.wait_for_selector("h1:has-text('Network overview')", timeout=30_000)
    _wait_idle(page)
    assert page.get_by_text("Verification coverage").first.is_visible()
    _shot(page, "en_overview")
    _open(page, "Alerts", "Alert inbox")
    # a viewer sees no acknowledge form
    assert page.get_by_role("button", name="Acknowledge").count() == 0
    assert page.get_by_text("needs the staff role").first.is_visible()
    page.close()
