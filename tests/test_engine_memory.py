"""The embedded engine's caches and memory cap are the spec's (embedded.engine), not ClickHouse's
defaults (5 GiB per cache, 90% of RAM): seen by a real serve's engine through /clickhouse. Its
allocator gives back what a query freed within embedded.engine.allocator_decay_ms, where
ClickHouse's build keeps it seconds: seen in serve's anonymous memory. An export query past its
own cap (embedded.export.max_memory_mb) fails the export naming that key."""
from __future__ import annotations

import copy
import json
import time
import urllib.parse
import urllib.request

import pytest

from cvat_analytics.bench.service import ServeProcess
from cvat_analytics_generator.spec import DEFAULT_SPEC, SpecError, load_spec

SIZES = {"mark_cache_mb": 48, "primary_index_cache_mb": 24, "uncompressed_cache_mb": 8, "index_mark_cache_mb": 4,
         "query_condition_cache_mb": 2, "compiled_expression_cache_mb": 3, "max_server_memory_mb": 900}
SETTINGS = {"mark_cache_mb": "mark_cache_size", "primary_index_cache_mb": "primary_index_cache_size",
            "uncompressed_cache_mb": "uncompressed_cache_size", "index_mark_cache_mb": "index_mark_cache_size",
            "query_condition_cache_mb": "query_condition_cache_size",
            "compiled_expression_cache_mb": "compiled_expression_cache_size",
            "max_server_memory_mb": "max_server_memory_usage"}


def spec_with(tmp_path, **sizes):
    text = DEFAULT_SPEC.read_text()
    for key, value in sizes.items():
        line = next(l for l in text.splitlines() if l.strip().startswith(f"{key}:"))
        text = text.replace(line, f"{line.split(':')[0]}: {value}", 1)
    path = tmp_path / "analytics.yaml"
    path.write_text(text)
    return path


def sql(svc: ServeProcess, query: str) -> bytes:
    """An answer of serve's read-only SQL interface."""
    request = urllib.request.Request(f"{svc.url}/clickhouse/?{urllib.parse.urlencode({'query': query})}",
                                     headers={"Authorization": f"Bearer {svc.sql_token}"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return resp.read()


# ~43 MB of CSV, sorted: the engine allocates and frees some 60 MB per answer, as an export's window does.
LARGE_ANSWER = ("SELECT number, toString(number * 7919) AS s, repeat('x', number % 50) "
                "FROM numbers(1000000) ORDER BY s DESC")


def anonymous_mb_kept(svc: ServeProcess) -> float:
    """serve's anonymous memory 0.75 s after two large answers, less what it held before them."""
    time.sleep(1)
    before = svc.rss("RssAnon")
    for _ in range(2):
        sql(svc, LARGE_ANSWER)
    time.sleep(0.75)
    return svc.rss("RssAnon") - before


@pytest.mark.clickhouse
@pytest.mark.slow
def test_serve_opens_the_engine_with_the_specs_cache_sizes_cap_and_allocator(tmp_path):
    svc = ServeProcess(f"chdb://{tmp_path / 'store'}", spec_with(tmp_path, **SIZES))
    try:
        names = ", ".join(f"'{name}'" for name in SETTINGS.values())
        got = dict(line.split("\t") for line in sql(
            svc, f"SELECT name, value FROM system.server_settings WHERE name IN ({names})").decode().splitlines())
        kept = anonymous_mb_kept(svc)
    finally:
        svc.stop()
    assert got == {SETTINGS[k]: str(v * 1048576) for k, v in SIZES.items()}
    # allocator_decay_ms 200 (the shipped spec's): freed pages are back with the system
    assert kept < 15, f"{kept:.0f} MB of freed memory still held"


@pytest.mark.clickhouse
@pytest.mark.slow
def test_the_operators_allocator_options_win_over_the_spec(tmp_path, monkeypatch):
    # An operator's own options (freed pages kept a minute): serve leaves them be, and the freed
    # pages stay. (ClickHouse's build keeps them 5 s: 34-56 MB held here on an idle machine, 23 MB
    # once under a full test run's load, when the refreshes' allocations purge them sooner.)
    monkeypatch.setenv("JE_MALLOC_CONF", "dirty_decay_ms:60000,muzzy_decay_ms:60000")
    svc = ServeProcess(f"chdb://{tmp_path / 'store'}", DEFAULT_SPEC)
    try:
        kept = anonymous_mb_kept(svc)
    finally:
        svc.stop()
    assert kept > 20, f"only {kept:.0f} MB held: the operator's JE_MALLOC_CONF was not used"


def test_the_allocator_is_set_from_the_spec_only_before_the_engine_loads_and_never_over_the_operators(
        monkeypatch):
    import os
    import sys

    from cvat_analytics.store import ALLOCATOR_ENV, set_allocator

    spec = load_spec()
    spec["embedded"]["engine"]["allocator_decay_ms"] = 750
    monkeypatch.delenv(ALLOCATOR_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "chdb", raising=False)  # as in serve before it opens the store
    assert set_allocator(spec)
    assert os.environ[ALLOCATOR_ENV] == "dirty_decay_ms:750,muzzy_decay_ms:0,background_thread:true"
    monkeypatch.setenv(ALLOCATOR_ENV, "narenas:1")  # the operator's own
    assert not set_allocator(spec) and os.environ[ALLOCATOR_ENV] == "narenas:1"
    monkeypatch.delenv(ALLOCATOR_ENV)
    monkeypatch.setitem(sys.modules, "chdb", object())  # loaded already: too late to matter
    assert not set_allocator(spec) and ALLOCATOR_ENV not in os.environ


def test_a_cap_below_what_ingest_and_the_refresh_need_is_refused_naming_the_key(tmp_path):
    with pytest.raises(SpecError, match="max_server_memory_mb"):
        load_spec(spec_with(tmp_path, max_server_memory_mb=256))


@pytest.mark.clickhouse
def test_an_export_query_past_its_memory_cap_fails_the_export_naming_the_limit(store, make_served):
    # 8,000 events of 2 KB payloads (16 MB): sorting their window takes ~40 MiB, past a 16 MiB cap;
    # the same export under the shipped cap goes through.
    store.client.command(f"INSERT INTO `{store.database}`.events (scope, source, timestamp, user_id, payload) "
                         "SELECT 'update:task', 'server', now64(3) - number, 2, repeat('x', 2000) FROM numbers(8000)")
    capped = copy.deepcopy(store.spec)
    capped["embedded"]["export"]["max_memory_mb"] = 16
    answers = {}
    for name, spec in (("capped", capped), ("shipped", store.spec)):
        srv = make_served(spec=spec, export=True)
        status, body = get(srv, "/api/events")
        assert status == 202, body
        path = f"/api/events?query_id={json.loads(body)['query_id']}"
        for _ in range(1200):
            status, body = get(srv, path)
            if status != 202:
                break
            time.sleep(0.05)
        answers[name] = status, body
    assert answers["shipped"][0] == 201, answers["shipped"]
    status, body = answers["capped"]
    assert status == 500 and "16 MiB (embedded.export.max_memory_mb)" in json.loads(body)["detail"], body


def get(srv, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.server_address[1]}{path}", timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.clickhouse
def test_a_dashboard_panel_runs_under_serves_own_cap_and_past_it_names_the_key(store):
    from cvat_analytics import store as store_module
    from cvat_analytics.dashboards import Dashboards

    spec = copy.deepcopy(store.spec)
    spec["embedded"]["dashboards"]["max_memory_mb"] = 16
    pages = Dashboards(lambda: store_module.open_handle(store.dsn), spec)
    assert pages.query("SELECT getSetting('max_memory_usage')")[1] == [(16 * 1048576,)]
    # Over it, the panel's error names the key (not only the engine's setting).
    from cvat_analytics.dashboards import memory_message
    with pytest.raises(Exception) as failed:
        pages.query("SELECT groupArray(repeat('x', 1000)) FROM numbers(100000)")
    assert "(embedded.dashboards.max_memory_mb)" in memory_message(failed.value, spec)
