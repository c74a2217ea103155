"""The embedded dashboards in a real browser: `cvat-analytics serve` (its own process)
over demo data, headless Chromium (Debian's chromium + chromium-driver) driven by
selenium, one browser session for every page. No console errors, every chart drawn
with data points, every table filled. Screenshots go to tests/artifacts/."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, write_spec
from cvat_analytics.bench.service import ServeProcess

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CLI = REPO / ".venv" / "bin" / "cvat-analytics"
ARTIFACTS = REPO / "tests" / "artifacts"
UIDS = ["EIGSTDAVz", "w0if6WAVz", "WvDvWK04k", "user-exceptions"]  # CVAT's, and its exceptions draft's

pytestmark = pytest.mark.clickhouse  # the service's process runs the engine


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """`serve` on a chdb path holding 7 days of demo traffic, working time refreshed."""
    work = tmp_path_factory.mktemp("pages")
    _, spec_path = write_spec(work)
    dsn = f"chdb://{work / 'data'}"
    for args in (["migrate"], ["demo", "--events", "20000", "--days", "7", "--seed", "5"]):
        subprocess.run([str(CLI), *args, "--dsn", dsn, "--spec", str(spec_path)], check=True,
                       capture_output=True, timeout=300)
    srv = ServeProcess(dsn, spec_path)
    # The first working-time refresh runs as serve starts; wait until the table shows it.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        html = get(srv.url + "/dashboards/w0if6WAVz")[1]
        if 'id="panel-4" data-panel-type="table" data-empty="false"' in html:
            break
        time.sleep(1)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the [test] extras")
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/install-system-packages.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # A closed network: without these Chromium keeps trying (and logging) background connections.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", "--window-size=1440,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def shoot(driver, name: str) -> None:
    """A full-page screenshot: the window is made as tall as the page first."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1440, min(max(height + 160, 600), 4000))  # + the window's own frame
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    driver.set_window_size(1440, 1000)


def severe_logs(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def test_every_dashboard_page_draws_its_panels(service, browser):
    from selenium.webdriver.common.by import By

    browser.get(service.url + "/dashboards")
    cards = browser.find_elements(By.CSS_SELECTOR, "a.card")
    assert [c.get_attribute("href").rsplit("/", 1)[-1] for c in cards] == UIDS
    shoot(browser, "dashboards")
    assert severe_logs(browser) == []

    for uid in UIDS:
        browser.get(f"{service.url}/dashboards/{uid}")
        panels = browser.find_elements(By.CSS_SELECTOR, "section.panel")
        assert panels, uid
        for panel in panels:
            title = panel.find_element(By.TAG_NAME, "h2").text
            kind = panel.get_attribute("data-panel-type")
            assert "Query failed" not in panel.text, (uid, title, panel.text)
            assert panel.get_attribute("data-empty") == "false", (uid, title)
            if kind in ("timeseries", "barchart"):
                svg = panel.find_element(By.CSS_SELECTOR, "svg.chart")
                assert int(svg.get_attribute("data-points")) > 0, (uid, title)
                assert svg.size["height"] > 40 and svg.size["width"] > 100, (uid, title, svg.size)
            elif kind == "table":
                assert len(panel.find_elements(By.CSS_SELECTOR, "tbody tr")) > 0, (uid, title)
            elif kind == "stat":
                assert panel.find_element(By.CSS_SELECTOR, ".stat-value").text.strip() not in ("", "–"), (uid, title)
        shoot(browser, uid)
        assert severe_logs(browser) == [], uid


def test_filters_from_the_form_narrow_the_page(service, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{service.url}/dashboards/w0if6WAVz")
    users = Select(browser.find_element(By.NAME, "users"))
    chosen = users.options[1].get_attribute("value")
    users.select_by_value(chosen)
    Select(browser.find_element(By.NAME, "range")).select_by_value("30d")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    assert f"users={chosen}" in browser.current_url and "range=30d" in browser.current_url
    table = browser.find_element(By.ID, "panel-4")
    user_ids = {row.find_elements(By.TAG_NAME, "td")[0].text for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert user_ids == {chosen}
    assert Select(browser.find_element(By.NAME, "users")).first_selected_option.get_attribute("value") == chosen
    shoot(browser, "management-one-user")
    assert severe_logs(browser) == []


def test_grafana_links_into_cvats_dashboards_work_here(service):
    """A CVAT bookmark (/d/<uid>?var-users=N&from=now-30d&to=now) keeps its meaning on the embedded page."""
    status, page = get(f"{service.url}/dashboards/w0if6WAVz?range=30d")
    user = re.search(r'<select name="users">\s*<option value="">All</option>\s*<option value="(\d+)"', page).group(1)
    status, html = get(f"{service.url}/dashboards/w0if6WAVz?var-users={user}&from=now-30d&to=now")
    assert status == 200 and "Query failed" not in html
    table = html[html.index('id="panel-4"'):]
    table = table[:table.index("</section>")]
    shown = set(re.findall(r"<tr><td class=\"num\">(\d+)</td>", table))
    assert shown == {user}
    assert get(f"{service.url}/dashboards/EIGSTDAVz?var-organizations=1")[0] == 200
    assert get(f"{service.url}/dashboards/EIGSTDAVz?var-organizations=x")[0] == 400


@pytest.mark.parametrize("query", ["users=1%20OR%201%3D1", "sources=x", "range=forever", "errors=nope",
                                   "scopes=change:frame%27"])
def test_bad_filters_answer_400_and_unknown_dashboards_404(service, query):
    status, html = get(f"{service.url}/dashboards/WvDvWK04k?{query}" if "scopes" not in query
                       else f"{service.url}/dashboards/EIGSTDAVz?{query}")
    assert status == 400 and "Bad filter" in html
    assert get(service.url + "/dashboards/nope")[0] == 404


def test_pages_load_nothing_from_elsewhere(service):
    with urllib.request.urlopen(service.url + "/dashboards/WvDvWK04k", timeout=60) as r:
        csp = r.headers["Content-Security-Policy"]
        html = r.read().decode()
    assert "default-src 'none'" in csp
    # Nothing is fetched from elsewhere: every src/href is local (data in tables may hold URLs).
    assert re.findall(r'(?:src|href)="(?:https?:)?//', html) == []
    assert "<script" not in html and "@import" not in html and "url(" not in html
