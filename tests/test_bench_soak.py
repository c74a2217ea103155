"""`cvat-analytics bench soak` end to end: a real serve, real senders, the store checked after."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cvat_analytics.bench import soak
from tests.conftest import REPO, write_spec


def test_bodies_number_every_event_once_in_time_order():
    shapes = soak.templates()
    assert len({ev["user_id"] for ev in shapes}) == soak.USERS
    first = json.loads(soak.body(shapes, 0, 1_700_000_000_000, 1000))
    second = json.loads(soak.body(shapes, soak.BODY_EVENTS, 1_700_000_000_000, 1000))
    events = first + second
    assert [json.loads(e["payload"])["soak"] for e in events] == list(range(1, 2 * soak.BODY_EVENTS + 1))
    assert all(e["scope"] and e["timestamp"] for e in events)


@pytest.mark.clickhouse
@pytest.mark.slow(22)
def test_soak_runs_15_seconds_and_checks_the_store(tmp_path):
    # 15 s in rows of 3.75 s, the refresh every 3 s: the same checks as an hour's soak, on less CPU.
    _, spec = write_spec(tmp_path, **{"working_time.refresh_interval_s": 3, "working_time.productivity_refresh_interval_s": 3})
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, "-m", "cvat_analytics.cli", "bench", "soak", "--minutes", "0.25", "--rate", "400",
         "--interval-s", "3.75", "--spec", str(spec), "--json", str(out), "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    report = json.loads(out.read_text())
    rows = report["per_minute"]
    assert len(rows) == 4  # 15 s in rows of 3.75 s, printed as they came
    assert proc.stderr.count("\n") >= 5 and "p99 ms" in proc.stderr
    assert [r["minute"] for r in rows] == [1, 2, 3, 4]
    # Every event sent was acknowledged, stored and stored once.
    assert report["acknowledged"] == 15 * 400 == report["stored"] == report["distinct"]
    assert report["exactly_once"] and report["totals_exact"]
    assert report["working_time_ms"] == report["query_time_ms"] > 0 and report["users"] == 40
    for r in rows:
        assert r["rss_mb"] > 50 and r["rss_median_mb"] > 50 and r["ack_p99_ms"] >= r["ack_p50_ms"] > 0
    # The refresh (every refresh_interval_s = 3 s) ran and its cost was read from the engine.
    assert report["refresh_runs"] >= 3 and report["refresh_max_ms"] is not None
    # ... and the productivity state's refresh (every productivity_refresh_interval_s = 3 s), apart from it.
    assert report["productivity_runs"] >= 3 and report["productivity_max_ms"] is not None
    assert sum(r["productivity_runs"] for r in rows) == report["productivity_runs"]
    # growth by the minutes' medians (a sample every half second), and by their last samples
    warm = report["rss_from_minute"]
    assert report["rss_growth_pct"] == pytest.approx(
        (rows[-1]["rss_median_mb"] - rows[warm - 1]["rss_median_mb"]) / rows[warm - 1]["rss_median_mb"] * 100)
    assert isinstance(report["rss_growth_at_minute_end_pct"], float)
    assert "RSS med" in proc.stderr
    assert "exactly once" in proc.stdout and "equal" in proc.stdout


def test_soak_refuses_a_store_that_exists(tmp_path):
    (tmp_path / "store").mkdir()
    proc = subprocess.run([sys.executable, "-m", "cvat_analytics.cli", "bench", "soak", "--minutes", "1",
                           "--workdir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "exists: the soak starts on a fresh store" in proc.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "store"]  # nothing started, nothing written


@pytest.mark.clickhouse
@pytest.mark.slow
def test_serve_process_reads_its_own_url_from_a_log_appended_to(tmp_path):
    from cvat_analytics.bench.service import ServeProcess
    from cvat_analytics_generator.spec import DEFAULT_SPEC

    log = tmp_path / "serve.log"
    log.write_text("2026-01-01T00:00:00Z INFO service serving http://127.0.0.1:9/ (an earlier run)\n")
    svc = ServeProcess(f"chdb://{tmp_path / 'store'}", DEFAULT_SPEC, log)
    try:
        assert svc.url != "http://127.0.0.1:9/"
        assert svc.get("/health")[0] == 200
    finally:
        svc.stop()
