"""Adopting CVAT's own events table writes none of its parts (docs/cvat-stack.md, "Adopting
CVAT's history"): migrate records where CVAT's history ends instead of stamping every
stored row, and the refresh of working time still takes exactly the events inserted after."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from cvat_analytics import store as store_module
from cvat_analytics import working_time as wt
from cvat_analytics.migrate import migrate
from cvat_analytics_generator.spec import load_spec
from tests.conftest import HOURLY_REFRESH, REPO, write_spec

sys.path.insert(0, str(Path(__file__).parent))
import working_time_oracle as oracle  # noqa: E402

# CVAT's components/analytics/clickhouse/init.py: its columns, ORDER BY timestamp, no codecs.
CVAT_EVENTS = (
    "CREATE TABLE {db}.events (scope String, obj_name Nullable(String), obj_id Nullable(UInt64), "
    "obj_val Nullable(String), source String, timestamp DateTime64(3, 'Etc/UTC'), count Nullable(UInt16), "
    "duration UInt32 DEFAULT toUInt32(0), project_id Nullable(UInt64), task_id Nullable(UInt64), "
    "job_id Nullable(UInt64), user_id Nullable(UInt64), user_name Nullable(String), "
    "user_email Nullable(String), org_id Nullable(UInt64), org_slug Nullable(String), payload Nullable(String)) "
    "ENGINE = MergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (timestamp)")
MONTHS = [dt.datetime(2024, m, 1, 9) for m in (1, 2, 3)]


def month_of_events(start: dt.datetime, users=(1, 2, 3), n=40) -> list[dict]:
    """Each user's client events 25 s apart, a change:frame every 4th, a long pause in
    the middle, server events that must not count (a job created, shapes drawn)."""
    base = int(start.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
    events = []
    for user in users:
        for i in range(n):
            ts = base + user * 3_600_000 + i * 25_000 + (200_000 if i >= n // 2 else 0)
            scope, duration = ("change:frame", 3_000 + i * 10) if i % 4 == 0 else ("click:element", 0)
            events.append(dict(scope=scope, source="client", ts=ts, duration=duration, user_id=user,
                               user_name=f"user{user}", job_id=10 * user + i % 3, task_id=user, project_id=1))
        events.append(dict(scope="create:job", source="server", ts=base, duration=0, user_id=user,
                           user_name=f"user{user}", job_id=10 * user, task_id=user, project_id=1))
        events.append(dict(scope="create:shapes", source="server", ts=base + 1_000, duration=0, user_id=user,
                           user_name=f"user{user}", job_id=10 * user, task_id=user, project_id=1,
                           obj_name="rectangle", count=user))
    return events


def insert(client, db, events):
    lines = []
    for e in events:
        row = {k: v for k, v in e.items() if k != "ts"}
        row["timestamp"] = (dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=e["ts"])).isoformat(sep=" ")[:23]
        lines.append(json.dumps(row))
    store_module.insert_json_rows(client, db, ("\n".join(lines) + "\n").encode())


def parts(client, db):
    return client.query("SELECT name, modification_time, bytes_on_disk FROM system.parts "
                        "WHERE database = {db:String} AND table = 'events' AND active ORDER BY name",
                        parameters={"db": db}).result_rows


def stored_totals(client, db):
    settled = defaultdict(int)
    for user, project, task, job, ms in client.query(
            f"SELECT user_id, project_id, task_id, job_id, working_time_ms FROM `{db}`.working_time_totals").result_rows:
        settled[(user, project, task, job)] += ms
    return {k: v for k, v in settled.items() if v}


def last_run(client, db):
    return client.query(f"SELECT full, users FROM `{db}`.working_time_refresh_log "
                        "ORDER BY watermark DESC LIMIT 1").result_rows[0]


@pytest.mark.clickhouse
def test_adopting_cvats_table_rewrites_no_part_and_the_refresh_takes_only_what_is_new(chdb_dsn, tmp_path):
    db = f"cvat_{uuid.uuid4().hex[:10]}"
    _, path = write_spec(tmp_path, **{"clickhouse.database": db, **HOURLY_REFRESH})
    spec = load_spec(path)
    client = store_module.connect(chdb_dsn)
    client.command(f"CREATE DATABASE `{db}`")
    client.command(CVAT_EVENTS.format(db=f"`{db}`"))
    history = []
    for month in MONTHS:  # one part per month: no merge can rename them while the test looks
        history += month_of_events(month)
        insert(client, db, month_of_events(month))
    try:
        before = parts(client, db)
        assert len(before) == 3
        migrate(client, spec, log=lambda *_: None)
        # Not one of CVAT's parts was rewritten: same names (a mutation renames a part),
        # same modification times and sizes, no mutation queued.
        assert parts(client, db) == before
        assert client.query("SELECT count() FROM system.mutations WHERE database = {db:String} AND table = 'events'",
                            parameters={"db": db}).result_rows == [(0,)]
        assert migrate(client, spec, log=lambda *_: None) == []

        wt.wait_current(client, spec)  # the first run counts all history
        assert stored_totals(client, db) == oracle.totals(history)
        # ... and the productivity state's first run takes it all too: the objects and the names
        assert client.query(f"SELECT sum(objects) FROM `{db}`.productivity_objects FINAL").result_rows == [
            (sum(e.get("count", 0) for e in history),)]
        assert client.query(f"SELECT groupArray(name) FROM (SELECT argMaxMerge(last_name) AS name FROM "
                            f"`{db}`.productivity_user_names GROUP BY user_id ORDER BY user_id)").result_rows == [
            (["user1", "user2", "user3"],)]
        wt.wait_current(client, spec)  # history read again: nothing in it is new
        assert last_run(client, db) == (0, 0)

        # User 2 works on: in the last adopted month, and in a new one. The merge puts
        # CVAT's rows of March into one part with the new ones (it writes its own time
        # into their inserted_at); they stay history.
        later = [e for e in month_of_events(MONTHS[-1] + dt.timedelta(days=1), users=(2,))]
        later += month_of_events(dt.datetime(2024, 4, 1, 9), users=(2,))
        insert(client, db, later)
        client.command(f"OPTIMIZE TABLE `{db}`.events FINAL")
        merged = {name for name, *_ in parts(client, db)} - {name for name, *_ in before}
        assert any(name.startswith("202403_") for name in merged)
        wt.wait_current(client, spec)
        assert last_run(client, db) == (0, 1)  # only user 2, incrementally
        assert stored_totals(client, db) == oracle.totals(history + later)
        wt.wait_current(client, spec)  # inside the commit margin user 2 is taken again, no one else
        assert last_run(client, db) == (0, 1)
        assert stored_totals(client, db) == oracle.totals(history + later)
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{db}` SYNC")


def retry_after_a_timeout(data: str, spec_path: str) -> None:
    """In a process of its own (test below): an earlier migrate's MATERIALIZE queued behind
    stopped merges, as behind a long queue; migrate again; print what it left."""
    spec = load_spec(Path(spec_path))
    db = spec["clickhouse"]["database"]
    client = store_module.connect(f"chdb://{data}")
    client.command(f"CREATE DATABASE `{db}`")
    client.command(CVAT_EVENTS.format(db=f"`{db}`"))
    for month in MONTHS[:2]:
        insert(client, db, month_of_events(month))
    client.command(f"SYSTEM STOP MERGES `{db}`.events")
    client.command(f"ALTER TABLE `{db}`.events ADD COLUMN inserted_at DateTime64(6, 'Etc/UTC') "
                   "MATERIALIZED toDateTime64(0, 6, 'Etc/UTC') CODEC(ZSTD(1))")
    client.command(f"ALTER TABLE `{db}`.events MATERIALIZE COLUMN inserted_at SETTINGS mutations_sync = 0")
    pending = f"SELECT count() FROM system.mutations WHERE database = '{db}' AND table = 'events' AND NOT is_done"
    queued = client.query(pending).result_rows[0][0]
    before = parts(client, db)
    migrate(client, spec, log=lambda *_: None)  # 0012's own MATERIALIZE would wait here for ever
    left = client.query(pending).result_rows[0][0]
    client.command(f"SYSTEM START MERGES `{db}`.events")
    wt.wait_current(client, spec)
    print(json.dumps({"queued": queued, "left": left, "unchanged": parts(client, db) == before,
                      "exact": stored_totals(client, db) == oracle.totals(
                          month_of_events(MONTHS[0]) + month_of_events(MONTHS[1]))}))


@pytest.mark.clickhouse
def test_a_retry_after_a_migrate_that_timed_out_stops_the_rewrite_it_left_queued(tmp_path):
    """An earlier migrate queued 0012's MATERIALIZE and timed out before it ran: the next
    one kills it, so it never rewrites CVAT's parts, and adopts them as they are."""
    _, spec_path = write_spec(tmp_path, **{"clickhouse.database": "cvat", **HOURLY_REFRESH})
    code = f"from tests.test_adoption import retry_after_a_timeout as r; r({str(tmp_path / 'db')!r}, {str(spec_path)!r})"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("migrate waited for the queued rewrite of CVAT's parts")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"queued": 1, "left": 0, "unchanged": True, "exact": True}
