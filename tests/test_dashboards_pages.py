"""The embedded dashboards in a real browser: `cvat-analytics serve` (its own process)
over demo data, headless Chromium (Debian's chromium + chromium-driver) driven by
selenium, one browser session for every page. No console errors, every chart drawn
with data points, every table filled. Screenshots go to tests/artifacts/."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import HOURLY_REFRESH, REPO, write_spec
from cvat_analytics.bench.service import ServeProcess

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CLI = REPO / ".venv" / "bin" / "cvat-analytics"
ARTIFACTS = REPO / "tests" / "artifacts"
UIDS = ["EIGSTDAVz", "w0if6WAVz", "WvDvWK04k", "user-exceptions", "cvat-productivity"]  # CVAT's, its exceptions draft's, ours
CUSTOM = ["errors-by-user", "monitoring-edited"]  # the user's own: written, and imported from Grafana's JSON
ERRORS_BY_USER = """\
uid: errors-by-user
title: Errors by user
description: Exceptions per user.
variables:
  - {name: users, label: User, kind: id, sql: "SELECT DISTINCT user_id FROM {{ db }}.events WHERE $__timeFilter(timestamp) AND user_id IS NOT NULL ORDER BY user_id"}
filters:
  - $__conditionalAll(user_id IN (${users}), $users)
panels:
  - id: 1
    title: Exceptions per user
    type: table
    gridPos: {x: 0, y: 0, w: 12, h: 8}
    sql: |
      SELECT user_id, count() AS exceptions FROM {{ db }}.events
      WHERE scope = 'send:exception' AND $__timeFilter(timestamp) AND {{ filters }}
      GROUP BY user_id ORDER BY exceptions DESC, user_id
  - id: 2
    title: Exceptions per day
    type: timeseries
    style: bars
    gridPos: {x: 12, y: 0, w: 12, h: 8}
    sql: |
      SELECT toStartOfDay(timestamp) AS time, count() AS exceptions FROM {{ db }}.events
      WHERE scope = 'send:exception' AND $__timeFilter(timestamp) AND {{ filters }}
      GROUP BY time ORDER BY time
"""

# The service's process runs the engine; one worker builds the demo data and the browser once.
pytestmark = [pytest.mark.clickhouse, pytest.mark.slow, pytest.mark.xdist_group("dashboard-pages")]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """`serve` on a chdb path holding 7 days of demo traffic, working time refreshed."""
    work = tmp_path_factory.mktemp("pages")
    # The refresh runs as each process opens the store (migrate, demo, serve) and then once an
    # hour, not every 10 s for the module's life: each run costs CPU, and the pages need only the first.
    _, spec_path = write_spec(work, custom_dashboards_dir="mine", **HOURLY_REFRESH)
    (work / "mine").mkdir()
    (work / "mine" / "errors_by_user.yaml").write_text(ERRORS_BY_USER)
    # A dashboard edited in Grafana and saved as JSON, imported as the README says.
    edited = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "monitoring.json").read_text())
    edited.update(uid="monitoring-edited", title="Monitoring (edited)")
    edited["panels"][2]["targets"][0]["rawSql"] = edited["panels"][2]["targets"][0]["rawSql"].replace(
        "count() AS events", "count() * 2 AS twice_the_events")
    (work / "edited.json").write_text(json.dumps(edited))
    subprocess.run([str(CLI), "dashboards", "import", str(work / "edited.json"), "--spec", str(spec_path)],
                   check=True, capture_output=True, timeout=120)
    dsn = f"chdb://{work / 'data'}"
    for args in (["migrate"], ["demo", "--events", "20000", "--days", "7", "--seed", "5"]):
        subprocess.run([str(CLI), *args, "--dsn", dsn, "--spec", str(spec_path)], check=True,
                       capture_output=True, timeout=300)
    srv = ServeProcess(dsn, spec_path)
    srv.spec_path = spec_path
    # The first working-time refresh runs as serve starts; wait until the tables show it: the
    # working-time table, and the Timesheet (working_time_totals only), which the first alone
    # did not prove (a fresh-clone run found the Timesheet still empty: "No rows in this range").
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        html = get(srv.url + "/dashboards/w0if6WAVz")[1] + get(srv.url + "/dashboards/cvat-productivity")[1]
        if ('id="panel-4" data-panel-type="table" data-empty="false"' in html
                and 'id="panel-7" data-panel-type="table" data-empty="false"' in html):
            break
        time.sleep(1)
    else:
        log = srv.log_path.read_text(errors="replace")[-3000:]
        srv.stop()
        pytest.fail("the working-time and Timesheet tables were still empty 120 s after serve started; "
                    f"serve's log ends:\n{log}")
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


def click_and_wait(driver, element) -> None:
    """Click a link or a submit button and wait for the next page (a click does not wait)."""
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)  # inside a scrolled table too
    element.click()

    def left(_driver) -> bool:
        # staleness_of, but mid-navigation chromedriver may word a stale element as "unknown error:
        # Node with given id does not belong to the document" (failed a fresh-clone run): gone too
        try:
            old.is_enabled()
            return False
        except WebDriverException:
            return True

    WebDriverWait(driver, 90).until(left)


def severe_logs(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


# Each panel of the page as drawn: its title, type, visible text, emptiness, chart (points
# and rendered size), table rows and stat value.
PANELS_AS_DRAWN = """
return Array.from(document.querySelectorAll('section.panel')).map(p => {
  const svg = p.querySelector('svg.chart'), h2 = p.querySelector('h2'), stat = p.querySelector('.stat-value');
  const box = svg && svg.getBoundingClientRect();
  return {title: h2 ? h2.innerText : '', kind: p.getAttribute('data-panel-type'), text: p.innerText,
          empty: p.getAttribute('data-empty'), rows: p.querySelectorAll('tbody tr').length,
          stat: stat ? stat.innerText : null,
          svg: svg ? {points: svg.getAttribute('data-points'), height: box.height, width: box.width} : null};
});
"""


def test_every_dashboard_page_draws_its_panels(service, browser):
    from selenium.webdriver.common.by import By

    browser.get(service.url + "/dashboards")
    cards = browser.find_elements(By.CSS_SELECTOR, "a.card")
    assert [c.get_attribute("href").rsplit("/", 1)[-1] for c in cards] == UIDS + CUSTOM
    shoot(browser, "dashboards")
    assert severe_logs(browser) == []

    for uid in UIDS + CUSTOM:
        browser.get(f"{service.url}/dashboards/{uid}")
        panels = browser.execute_script(PANELS_AS_DRAWN)  # one round trip per page, not ~6 per panel
        assert panels, uid
        for panel in panels:
            title, kind = panel["title"], panel["kind"]
            assert "Query failed" not in panel["text"], (uid, title, panel["text"])
            assert panel["empty"] == "false", (uid, title)
            if kind in ("timeseries", "barchart"):
                assert panel["svg"] is not None, (uid, title)
                assert int(panel["svg"]["points"]) > 0, (uid, title)
                assert panel["svg"]["height"] > 40 and panel["svg"]["width"] > 100, (uid, title, panel["svg"])
            elif kind == "table":
                assert panel["rows"] > 0, (uid, title)
            elif kind == "stat":
                assert (panel["stat"] or "").strip() not in ("", "–"), (uid, title)
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
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
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
    shown = set(re.findall(r'<tr><td class="num">(?:<a [^>]*>)?(\d+)<', table))
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


# --- working in the pages: every interaction is a link or a GET form (no script)

def table_column(browser, panel: str, index: int) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, f"#{panel} tbody tr")
    return [r.find_elements(By.TAG_NAME, "td")[index].text for r in rows]


def test_a_click_on_a_user_cell_filters_the_dashboard_to_that_user(service, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{service.url}/dashboards/w0if6WAVz?range=30d")
    users = set(table_column(browser, "panel-4", 0))
    assert len(users) > 1
    cell = browser.find_elements(By.CSS_SELECTOR, "#panel-4 tbody tr td:first-child a.filter")[-1]
    user = cell.text
    click_and_wait(browser, cell)
    assert f"users={user}" in browser.current_url and "range=30d" in browser.current_url
    assert set(table_column(browser, "panel-4", 0)) == {user}
    assert Select(browser.find_element(By.NAME, "users")).first_selected_option.get_attribute("value") == user
    # The activity lines link to the same dashboard filtered to their user, too.
    series = browser.find_elements(By.CSS_SELECTOR, "#panel-1 a.series-link")
    assert series and all(f"users={user}" in a.get_attribute("href") for a in series)
    assert severe_logs(browser) == []


def test_a_series_label_of_management_links_to_its_user(service, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{service.url}/dashboards/w0if6WAVz?range=30d")
    label = browser.find_elements(By.CSS_SELECTOR, "#panel-3 a.series-link")[0]
    href = label.get_dom_attribute("href")  # an SVG <a>: its attribute, not a resolved URL
    user = re.search(r"users=(\d+)", href).group(1)
    assert label.text.endswith(f"#{user}")
    click_and_wait(browser, label)
    assert set(table_column(browser, "panel-4", 0)) == {user}


def test_a_click_on_a_column_header_sorts_the_table_on_the_server(service, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{service.url}/dashboards/WvDvWK04k?range=30d")
    default = table_column(browser, "panel-9", 0)  # by events, most first
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "#panel-9 thead th:nth-child(1) a"))  # scope: descending
    assert "sort-9=-scope" in browser.current_url
    descending = table_column(browser, "panel-9", 0)
    assert descending == sorted(descending, reverse=True) and descending != default
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "#panel-9 thead th:nth-child(1) a"))  # again: ascending
    ascending = table_column(browser, "panel-9", 0)
    assert ascending == sorted(ascending) and "▲" in browser.find_element(By.CSS_SELECTOR, "#panel-9 th a.on").text
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "#panel-9 thead th:nth-child(3) a"))  # events
    counts = [int(c.replace(",", "")) for c in table_column(browser, "panel-9", 2)]
    assert counts == sorted(counts, reverse=True)
    assert get(f"{service.url}/dashboards/WvDvWK04k?sort-9=nope")[0] == 400
    assert get(f"{service.url}/dashboards/WvDvWK04k?sort-9=scope%60%20DESC%2C%20sleep(3)")[0] == 400


def test_tables_page_and_say_how_many_rows_they_have(service, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{service.url}/dashboards/EIGSTDAVz?range=30d")
    assert browser.find_element(By.CSS_SELECTOR, "#panel-4 .pager .count").text == "rows 1–50 of 1,000"
    first = table_column(browser, "panel-4", 0)
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "#panel-4 .pager a[rel=next]"))
    assert browser.find_element(By.CSS_SELECTOR, "#panel-4 .pager .count").text == "rows 51–100 of 1,000"
    assert len(table_column(browser, "panel-4", 0)) == 50 and table_column(browser, "panel-4", 0) != first


def test_the_search_field_narrows_a_long_filter_list(service, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{service.url}/dashboards/EIGSTDAVz?range=30d")
    every = [o.get_attribute("value") for o in Select(browser.find_element(By.NAME, "scopes")).options[1:]]
    assert len(every) > 15
    search = browser.find_element(By.NAME, "find-scopes")
    search.send_keys("frame")
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    narrowed = [o.get_attribute("value") for o in Select(browser.find_element(By.NAME, "scopes")).options[1:]]
    assert narrowed and len(narrowed) < len(every) and all("frame" in o for o in narrowed)
    assert browser.find_element(By.NAME, "find-scopes").get_attribute("value") == "frame"


def test_a_long_value_opens_whole_in_a_detail_view(service, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{service.url}/dashboards/WvDvWK04k?range=30d")
    link = browser.find_element(By.CSS_SELECTOR, "#panel-7 td.long a")
    detail = browser.find_element(By.ID, link.get_attribute("href").split("#", 1)[1])
    assert not detail.is_displayed()
    link.click()
    assert detail.is_displayed() and len(detail.find_element(By.TAG_NAME, "pre").text) > len(link.text)
    shoot(browser, "monitoring-detail")
    detail.find_element(By.CSS_SELECTOR, "a.close").click()
    assert not detail.is_displayed()


def test_the_refresh_choice_sets_the_pages_refresh(service, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{service.url}/dashboards/WvDvWK04k")
    assert browser.find_elements(By.CSS_SELECTOR, "meta[http-equiv=refresh]") == []
    Select(browser.find_element(By.NAME, "refresh")).select_by_value("30s")
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    assert "refresh=30s" in browser.current_url
    meta = browser.find_element(By.CSS_SELECTOR, "meta[http-equiv=refresh]")
    assert meta.get_attribute("content") == "30"
    # Links on the page keep the choice.
    assert "refresh=30s" in browser.find_element(By.CSS_SELECTOR, "#panel-9 thead th a").get_attribute("href")
    assert get(f"{service.url}/dashboards/WvDvWK04k?refresh=1s")[0] == 400


def test_custom_dashboards_draw_in_both_modes(service):
    """The user's own, and the one imported from Grafana's JSON: served here, and in the
    Grafana provisioning `render` writes from the same spec."""
    from cvat_analytics_generator.render import render_all
    from cvat_analytics_generator.spec import load_spec

    status, html = get(f"{service.url}/dashboards/monitoring-edited?range=30d")
    assert status == 200 and "Monitoring (edited)" in html and "Query failed" not in html
    twice = re.search(r'id="panel-3".*?<div class="stat-value">([\d,]+)</div>', html, re.S).group(1)
    assert int(twice.replace(",", "")) % 2 == 0 and int(twice.replace(",", "")) > 0
    files = render_all(load_spec(service.spec_path))
    edited = json.loads(files["grafana/dashboards/monitoring_edited.json"])
    assert "count() * 2 AS twice_the_events" in edited["panels"][2]["targets"][0]["rawSql"]
    assert json.loads(files["grafana/dashboards/errors_by_user.json"])["uid"] == "errors-by-user"
