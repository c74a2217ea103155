"""`cvat-analytics bench` runs end to end on a small N and reports every figure.

No timing assertions here: the figures themselves are the benchmark's output
(docs/benchmarks.md); the suite only checks that each one is produced, sane, and
measured against its baseline in the same run.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from cvat_analytics.bench import statements
from cvat_analytics.bench.cvat_baselines import python_baseline
from tests.conftest import HOURLY_REFRESH, write_spec

REPO = Path(__file__).resolve().parent.parent
FIELDS = {"name", "value", "unit", "baseline", "baseline_value", "ratio"}
# Enough for every figure to be measured (four 1000-event bodies, forty of 100, scans beside
# ingest); more events cost CPU and prove nothing here. The load waits out the refresh's
# commit margin, which the test's spec makes the least it takes (10 s, not 60).
EVENTS = 4000


def test_panels_have_both_schemas_and_a_kind():
    panels = statements.panels()
    assert len(panels) >= 8
    kinds = {p["kind"] for p in panels}
    assert {"overview", "user", "job"} <= kinds
    for p in panels:
        assert p["ours"].lstrip().upper().startswith("SELECT") and p["cvat"].lstrip().upper().startswith("SELECT")
        assert "{db:Identifier}" in p["ours"] and "{cvat_db:Identifier}" in p["cvat"]
        # values are bound by ClickHouse, never formatted in
        assert "{{" not in p["ours"] + p["cvat"] and "{t_from:DateTime64(3, 'Etc/UTC')}" in p["ours"]


def test_cvat_loop_credits_the_previous_events_ids_and_carries_across_batches():
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)

    def at(ms):
        return t0 + timedelta(milliseconds=ms)

    rows = [  # (user, ts, scope, duration, job, task, project)
        (1, at(0), "change:frame", 5000, 10, 1, 1),
        (1, at(3000), "change:frame", 6000, 11, 1, 1),  # 5000 + 4000
        (1, at(9000 + 99_999), "click:element", 0, 11, 1, 1),  # a gap just under 100 s
        (1, at(9000 + 99_999 + 100_000), "click:element", 0, 11, 1, 1),  # exactly 100 s: 0
        (2, at(0), "click:element", 0, None, None, None),
    ]
    for batch in (1, 2, 100):
        totals = python_baseline(iter(rows), batch=batch)
        assert totals[(1, 10, 1, 1)] == 5000 + 4000  # the first event credits its own ids
        assert totals[(1, 11, 1, 1)] == 99_999
        assert totals.get((2, None, None, None), 0) == 0


@pytest.mark.clickhouse
@pytest.mark.slow(130)
def test_bench_runs_on_a_small_n_and_reports_every_figure(tmp_path):
    # The bench starts every refresh it times (working_time.wait_current); scheduled ones every
    # 10 s in each of its stores (the load waits a minute, the ceiling migrates seven databases)
    # would only cost CPU, so the spec schedules them hourly.
    _, spec = write_spec(tmp_path, **HOURLY_REFRESH, **{"working_time.commit_margin_s": 10})
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "cvat_analytics.cli", "bench", "--events", str(EVENTS), "--spec", str(spec), "--runs", "1",
         "--json", str(out), "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[1/11]" in proc.stderr  # the progress display
    assert not (tmp_path / "work").exists()  # scratch removed without --keep

    report = json.loads(out.read_text())
    # the 1,000 new client events of the incremental refresh, and up to 1,000 server events (as
    # many as the data set has with a job) of the productivity state's
    assert EVENTS + 1000 < report["events"] <= EVENTS + 2000
    assert {"nproc", "ram_gb", "cpu"} <= set(report["machine"])
    figures = {f["name"]: f for f in report["figures"]}
    for f in figures.values():
        assert FIELDS <= set(f), f
        assert isinstance(f["value"], (int, float)) and f["value"] > 0, f
        assert isinstance(f["baseline_value"], (int, float)) and f["baseline_value"] > 0, f
        assert math.isfinite(f["ratio"]) and f["ratio"] > 0, f
        assert f["unit"] in ("s", "MB", "events/s", "rows/s", "B/event"), f
        assert f["met"] in (True, False, None)

    def named(prefix):
        found = [f for n, f in figures.items() if n.startswith(prefix)]
        assert found, f"no figure {prefix!r} in {sorted(figures)}"
        return found

    sql = named("working time: window SQL, all users")[0]
    udf = named("working time: executable UDF, all users")[0]
    totals = named("working time: precomputed totals")[0]
    # The three ways give the same numbers on the same rows.
    assert sql["detail"]["total_ms"] == udf["detail"]["total_ms"] == totals["detail"]["total_ms"] > 0
    assert totals["detail"]["equals_window_sql"] is True
    # CPU seconds beside the wall time: on a shared machine the wall time counts waiting for a core.
    assert 0 < sql["detail"]["cpu_s"] and 0 < sql["detail"]["baseline_cpu_s"]
    named("working time: window SQL, peak memory")
    named("working time: executable UDF, peak memory")
    for size in ("1000", "100"):
        ingest = named(f"ingest: serve over HTTP, {size}-event bodies")[0]
        assert ingest["detail"]["events"] == EVENTS  # every event acknowledged
        assert "ceiling" in ingest["baseline"]
    health = named("serve: GET /health round trip while idle, kept-alive")[0]
    # without TCP_NODELAY a kept-alive answer waits ~40 ms for the client's delayed ACK
    assert health["value"] < 0.02 and health["detail"]["p99_ms"] >= health["value"] * 1000
    beside = named("ingest beside a full-scan SQL query on /clickhouse")[0]
    assert beside["detail"]["events"] == EVENTS and beside["detail"]["scans"] >= 1
    assert len(named("dashboard: ")) == len(statements.panels())
    productivity = named("productivity panel: ")  # each beside the same question from raw events
    assert all(f["detail"]["kind"] == "productivity" for f in productivity)
    # the precomputed state answers as the raw events do (whatever the time: that is the target's)
    assert [f["name"] for f in productivity if not f["detail"]["same_answer"]] == []
    # the working-time refresh's baseline is every run of the full refresh (RunWatcher), not its
    # last bucket's: they read every client event (most of the load) at least once
    refresh = named("working time: view refresh after 1,000 new events")[0]
    assert 0 < refresh["detail"]["read_rows"] < refresh["detail"]["baseline_read_rows"]
    assert refresh["detail"]["baseline_read_rows"] >= EVENTS // 2 and refresh["detail"]["baseline_runs"] >= 2
    # and each run once: two views, each one run at a time, so their durations add up to at most
    # twice the refresh's wall time (a watcher that counted a running run at every poll gave
    # 152 s in 24 s)
    wall = named("working time: totals exact again after 1,000 new events")[0]
    assert refresh["baseline_value"] <= 2 * wall["baseline_value"] + 0.05, (refresh, wall)
    # the productivity state's refresh after 1,000 new server events read fewer rows than its first, full run
    state = named("productivity: view refresh after 1,000 new server events")[0]
    assert 0 < state["detail"]["read_rows"] < state["detail"]["baseline_read_rows"]
    # the baseline is the full run the bench started, not a scheduled one already under way: a
    # full run reads every event at least once (the user names), an incremental one the last minute's
    assert state["detail"]["baseline_read_rows"] >= EVENTS
    rate = named("export: CSV of ")
    assert len(rate) == 2 and rate[0]["detail"]["rows"] == rate[0]["detail"]["baseline_rows"] > 0
    named("storage: bytes on disk per event")

    table = proc.stdout
    for name in figures:
        assert name in table


def _running_under(directory: Path) -> list[str]:
    """The command lines of this machine's processes that name `directory`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        if any(str(directory).encode() in a for a in args):
            found.append(" ".join(a.decode(errors="replace") for a in args))
    return found


@pytest.mark.clickhouse
def test_a_bench_stopped_by_sigterm_stops_its_phases_and_removes_its_workdir(tmp_path):
    """SIGTERM (a `timeout`, a cancelled CI job) unwinds the bench as Ctrl-C does: the phases it
    started end and its scratch directory goes. Python's default died at once, leaving phases and
    serve running on their chdb paths; a second bench on the same workdir then failed beside them."""
    import signal
    import time

    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-m", "cvat_analytics.cli", "bench", "--events", "1000",
                             "--workdir", str(work)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any("cvat_analytics.bench" in c for c in _running_under(work)):  # a phase is running
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert _running_under(work) == [] and not work.exists()
