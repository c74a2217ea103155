"""Work per dashboard page is bounded (issue: a 300-year range took the process past 6 GB):
long ranges get coarse buckets, out-of-range times are a 400 naming the limit, and stored
values selected as filters are literals, never macros."""
from __future__ import annotations

import json
import re
import resource
import time
from datetime import datetime, timedelta, timezone

import pytest

from cvat_analytics.dashboards import BadRequest, Dashboards, handle, parse_selection
from cvat_analytics_generator.grafana_macros import expand
from cvat_analytics.store import insert_json_rows
from cvat_analytics_generator import grafana
from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec

SPEC = load_spec(DEFAULT_SPEC)
NOW = datetime.now(timezone.utc).replace(microsecond=0)
MACRO_MESSAGE = "bad $__timeFilter( $__timeInterval($__timeInterval($__fromTime)) ${errors} x') OR ('1'='1"


def at(seconds_ago: int) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%d %H:%M:%S.000")


@pytest.fixture
def events(store):
    rows = [{"scope": "send:exception", "source": "client", "timestamp": at(600 * i), "user_id": 1 + i % 3,
             "user_name": f"u{i % 3}", "job_id": 10 + i % 2, "duration": 0,
             "payload": json.dumps({"message": MACRO_MESSAGE if i % 2 else "plain", "stack": "s"})}
            for i in range(40)]
    rows += [{"scope": "update:job", "source": "server", "timestamp": at(3000 * i), "user_id": 1, "obj_name": "state",
              "obj_val": "completed", "job_id": 10, "duration": 0} for i in range(10)]
    insert_json_rows(store.client, store.database, "\n".join(json.dumps(r) for r in rows).encode())
    return store


@pytest.mark.parametrize("query, limit", [
    ({"from": ["2000-01-01"], "to": ["2299-01-01"]}, "to: must be between 1970-01-01 and 2106-01-01"),
    ({"from": ["2024-01-01"], "to": ["9999-12-31T23:59:59"]}, "to: must be between"),
    ({"from": ["0001-01-01"]}, "from: must be between"),
    ({"from": ["999999999999999"]}, "from: must be between"),
    ({"from": ["now-999999w"]}, "from: must be between"),
])
def test_times_outside_datetime_are_a_400_naming_the_limit(query, limit):
    with pytest.raises(BadRequest, match=re.escape(limit)):
        parse_selection(query, grafana.load("monitoring", SPEC), SPEC)


@pytest.mark.clickhouse
def test_out_of_range_page_is_400_not_500(events):
    pages = Dashboards(lambda: events.client, events.spec)
    status, html = handle(pages, "/dashboards/WvDvWK04k", {"from": ["2024-01-01"], "to": ["9999-12-31T23:59:59"]})
    assert status == 400 and "2106-01-01" in html


def test_fixed_bucket_panels_get_coarser_over_long_ranges():
    """Every panel's buckets over 135 years: at most max_points per series (Grafana's SQL too)."""
    max_points = SPEC["embedded"]["dashboards"]["max_points"]
    t0, t1 = datetime(1970, 1, 2, tzinfo=timezone.utc), datetime(2105, 12, 31, tzinfo=timezone.utc)
    fixed = 0
    for d in grafana.load_all(SPEC):
        for p in d["panels"]:
            sql = expand(p["sql"], t0, t1, 86400)
            for step in re.findall(r"toIntervalSecond\((\d+) \* greatest\(1, intDiv\((\d+) - (\d+) \+ (\d+), (\d+)\)\)\)", sql):
                floor, to_ms, from_ms, _, per = map(int, step)
                seconds = floor * max(1, -(-(to_ms - from_ms) // per))
                assert (t1 - t0).total_seconds() / seconds <= max_points, (d["uid"], p["title"])
                fixed += 1
    assert fixed >= 4  # Active users (15 min), jobs per day and per hour, errors per day


@pytest.mark.clickhouse
def test_a_135_year_range_answers_in_seconds_with_coarse_charts(events):
    pages = Dashboards(lambda: events.client, events.spec)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    started = time.monotonic()
    for uid in ("EIGSTDAVz", "w0if6WAVz", "WvDvWK04k", "user-exceptions"):
        status, html = handle(pages, f"/dashboards/{uid}", {"from": ["1970-01-02"], "to": ["2105-12-31"]})
        assert status == 200 and "Query failed" not in html and "max_rows" not in html, uid
        points = [int(n) for n in re.findall(r'data-points="(\d+)"', html)]
        assert points and max(points) <= 4 * SPEC["embedded"]["dashboards"]["max_points"], uid
    elapsed = time.monotonic() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"135-year range, four pages: {elapsed:.1f} s, peak RSS +{grown_mb:.0f} MB")
    assert elapsed < 60, elapsed  # before: > 13 s and 6 GB for one page
    assert grown_mb < 400, grown_mb


@pytest.mark.clickhouse
def test_a_panel_over_max_rows_says_so(events, tmp_path):
    spec = dict(events.spec, embedded=dict(events.spec["embedded"], dashboards={
        **events.spec["embedded"]["dashboards"], "max_points": 1000, "max_rows": 100, "page_rows": 50}))
    pages = Dashboards(lambda: events.client, spec)
    d = pages.definitions["WvDvWK04k"]
    d["panels"] = [dict(d["panels"][5], sql="SELECT toDateTime(number) AS time, number AS n FROM numbers(1000)")]
    status, html = handle(pages, "/dashboards/WvDvWK04k", {})
    assert status == 200 and "more than 100 rows (embedded.dashboards.max_rows)" in html


@pytest.mark.clickhouse
def test_a_stored_message_holding_macros_is_a_literal_filter(events):
    """A send:exception whose message holds `$__timeFilter(`, nested macros and a quote, selected in
    Monitoring's errors filter: the page answers, and the exceptions table shows exactly those rows."""
    pages = Dashboards(lambda: events.client, events.spec)
    started = time.monotonic()
    status, html = handle(pages, "/dashboards/WvDvWK04k", {"errors": [MACRO_MESSAGE], "range": ["24h"]})
    assert time.monotonic() - started < 30
    assert status == 200 and "Query failed" not in html
    table = html[html.index('id="panel-7"'):]
    table = table[:table.index("</section>")]
    assert table.count("<tr><td") == 20  # the 20 events holding it, not the 20 "plain" ones
    assert re.search(r'id="panel-4".*?<div class="stat-value">20</div>', html, re.S)


def test_page_links_change_one_parameter_and_keep_the_rest():
    from cvat_analytics.dashboards import PageLinks

    d = grafana.load("monitoring", SPEC)
    links = PageLinks("WvDvWK04k", {"var-users": ["7"], "from": ["now-30d"], "to": ["now"], "refresh": ["1m"],
                                    "sort-7": ["-user_id"], "page-7": ["3"], "find-errors": ["x"], "junk": ["1"]}, d)
    # A new filter keeps range, refresh, sort and search, and starts tables on their first page.
    assert links.url({"jobs": "12"}) == ("/dashboards/WvDvWK04k?from=now-30d&to=now&refresh=1m&users=7"
                                         "&find-errors=x&sort-7=-user_id&jobs=12")
    # Paging and sorting keep the filters; a value is URL-encoded, never pasted.
    assert links.url({"page-7": "4"}).endswith("&sort-7=-user_id&page-7=4")
    assert links.url({"users": "1&range=1h"}).count("&range=") == 0


# -- what the query string may ask for, over a socket to a real serve -----------------

def get_page(srv, query: str) -> tuple[int, bytes, float]:
    import http.client

    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=120)
    started = time.process_time()
    try:
        conn.request("GET", "/dashboards/WvDvWK04k?" + query)
        response = conn.getresponse()
        return response.status, response.read(), time.process_time() - started
    finally:
        conn.close()


@pytest.mark.clickhouse
def test_a_page_number_past_the_last_possible_page_is_400_naming_the_limit(make_served, events):
    srv = make_served(dashboards=True)
    bounds = events.spec["embedded"]["dashboards"]
    last = -(-bounds["max_rows"] // bounds["page_rows"])
    for page in ("9" * 5000, str(last + 1), "0", "x", "%D9%A1"):  # the last: an Arabic-Indic 1  # 5,000 digits: past int()'s 4,300
        status, html, _ = get_page(srv, f"page-7={page}")
        assert status == 400, page
        assert f"page-7: expected a page number from 1 to {last} (embedded.dashboards.max_rows / page_rows)" in html.decode()
    assert get_page(srv, f"page-7={last}")[0] == 200  # past the rows there are: the last page


@pytest.mark.clickhouse
def test_selected_values_past_the_bound_are_400_and_cheap(make_served, events):
    srv = make_served(dashboards=True)
    limit = events.spec["embedded"]["dashboards"]["max_selected_values"]
    query = "&".join(f"users={n}" for n in range(5900))  # 64 KB of the URL: a 14.8 MB page on main
    status, html, cpu = get_page(srv, query)
    print(f"5,900 user values: {status}, {len(html):,} bytes, {cpu:.2f} s of CPU")
    assert status == 400 and f"users: 5,900 values selected; at most {limit:,} (embedded.dashboards.max_selected_values)" in html.decode()
    assert len(html) < 20_000
    assert get_page(srv, "&".join(f"users={n}" for n in range(limit)))[0] == 200
    # An id of 5,000 digits (zeros first, so it is "small"): 400, not int()'s error as a 500.
    status, html, _ = get_page(srv, "users=" + "0" * 5000 + "7")
    assert status == 400 and "users: expected a whole number id" in html.decode()


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_parameters_of_no_panel_are_not_repeated_in_every_link(make_served, events, store):
    """sort-/page-/find- for panels and variables this dashboard does not have, or a long
    search text, would be carried into every link of the page: the page grew with the URL."""
    from cvat_analytics import working_time

    # The page shows the refresh's runs: none may land between the two pages compared.
    working_time.wait_current(store.client, store.spec)
    store.client.command(f"SYSTEM STOP VIEW `{store.database}`.working_time_refresh")
    srv = make_served(dashboards=True)
    status, plain, _ = get_page(srv, "range=24h&find-errors=" + "e" * 100)  # a search text is cut there
    assert status == 200
    junk = "&".join(f"sort-{n}=x&page-{n}=1&find-nosuch{n}=y" for n in range(1000, 1800))
    status, padded, _ = get_page(srv, "range=24h&find-errors=" + "e" * 20000 + "&" + junk)
    print(f"plain page {len(plain):,} bytes, with 50 KB of others' parameters {len(padded):,} bytes")
    assert status == 200 and len(padded) == len(plain)
