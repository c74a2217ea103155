"""The CSV export: filters, the handler protocol (202 -> 201 -> 200), CSV details, memory."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cvat_analytics import export
from cvat_analytics.export import filters
from cvat_analytics.export.writer import CHUNK_ROWS, render
from cvat_analytics.service import export_routes
from cvat_analytics.export import ExportJobs, FilterError, parse_filters
from cvat_analytics.store import insert_json_rows

UTC = timezone.utc
REPO = Path(__file__).resolve().parent.parent
NOW = datetime.now(UTC).replace(microsecond=0)


def q(**kw) -> dict:
    return {("from" if k == "from_" else k): [str(v)] for k, v in kw.items()}


def ts(delta: timedelta) -> str:
    return (NOW - delta).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def row(scope="draw:object", source="client", at=timedelta(hours=1), **cols) -> dict:
    r = {"scope": scope, "source": source, "timestamp": ts(at), "duration": 0, "payload": None}
    r.update(cols)
    return r


def insert(store, rows):
    body = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    insert_json_rows(store.client, store.database, body)


@pytest.fixture
def jobs(store, tmp_path):
    j = ExportJobs(lambda: store.client, store.spec, tmp_path / "exports", workers=1)
    yield j
    j.shutdown()


def run_legacy(jobs, query) -> tuple[list[int], bytes, dict]:
    """Drive GET /api/events to the end: statuses seen, the CSV, the final headers."""
    r = export_routes.handle_legacy_get(jobs, query)
    statuses = [r.status]
    assert r.status == 202, r.body
    qid = json.loads(r.body)["query_id"]
    jobs.wait(qid)
    r = export_routes.handle_legacy_get(jobs, dict(query, query_id=[qid]))
    statuses.append(r.status)
    assert r.status == 201, r.body
    r = export_routes.handle_legacy_get(jobs, dict(query, query_id=[qid], action=["download"]))
    statuses.append(r.status)
    assert r.status == 200
    data = r.body.read()
    r.body.close()
    return statuses, data, r.headers


def parse(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode())))


# -- filters (no engine) ---------------------------------------------------------
def test_default_window_is_everything_until_now():
    # CVAT 2.36+: "from: Default is the minimal time", "to: Default is the current time".
    f = parse_filters({}, now=NOW)
    assert f.to == NOW and f.from_ == filters.MIN_TIME
    assert f.org_id is f.user_id is None


def test_only_to_and_only_from():
    f = parse_filters(q(to="2024-02-01"), now=NOW)
    assert f.from_ == filters.MIN_TIME and f.to == datetime(2024, 2, 1, tzinfo=UTC)
    f = parse_filters(q(from_="2024-02-01T10:00:00+02:00"), now=NOW)
    assert f.from_ == datetime(2024, 2, 1, 8, tzinfo=UTC) and f.to == NOW


def test_naive_is_utc_and_plus_sign_decoded_as_space():
    assert parse_filters(q(from_="2024-01-01T12:00:00", to="2024-01-02"), now=NOW).from_ == \
        datetime(2024, 1, 1, 12, tzinfo=UTC)
    f = parse_filters({"from": ["2024-01-01T12:00:00 02:00"], "to": ["2024-01-02T00:00:00Z"]}, now=NOW)
    assert f.from_ == datetime(2024, 1, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("param,value", [
    ("org_id", "abc"), ("project_id", "-1"), ("task_id", "1.5"), ("job_id", ""), ("user_id", "1e3"),
    ("org_id", str(2**64)), ("from", "yesterday"), ("to", "2024-13-01"),
    ("user_id", "1 OR 1=1"), ("org_id", "1; DROP TABLE events"), ("task_id", "1)--"),
    ("project_id", "0x10"), ("job_id", "１２"), ("from", "2024-01-01' OR '1'='1"),
])
def test_bad_parameter_names_it(param, value):
    with pytest.raises(FilterError) as e:
        parse_filters({param: [value]}, now=NOW)
    assert e.value.param == param


def test_from_after_to():
    with pytest.raises(FilterError) as e:
        parse_filters(q(from_="2024-02-01", to="2024-01-01"))
    assert e.value.param == "from" and "after" in e.value.reason


def test_filename_sanitised():
    assert export.sanitize_filename("../../etc/passwd") == "passwd"
    assert export.sanitize_filename('a"b\r\nc;.csv') == "a_b_c_.csv"
    assert export.sanitize_filename("...") is None
    assert export.sanitize_filename("my events.csv") == "my_events.csv"
    assert export.default_filename(0) == "logs_1970_01_01_00_00_00.csv"


# -- the protocol with the real engine ---------------------------------------------
@pytest.mark.clickhouse
def test_legacy_protocol_and_csv_format(store, jobs):
    insert(store, [
        row("change:frame", at=timedelta(hours=2), duration=1500, count=3, job_id=7, task_id=3,
            project_id=1, user_id=5, user_name="ann", org_id=2, payload='{"a":"x,\\"y\\""}'),
        row("create:job", "server", at=timedelta(hours=3), obj_id=7, obj_name="", job_id=7),
        row("send:exception", "client", at=timedelta(hours=1)),
        row("send:exception", "server", at=timedelta(hours=1)),
        row("debug:info", "other", at=timedelta(hours=1)),
        row("draw:object", at=timedelta(days=40)),  # outside from=
        {"scope": "zoom:image", "source": "client", "timestamp": ts(timedelta(hours=2)), "duration": 0},
    ])
    statuses, data, headers = run_legacy(jobs, {"from": [(NOW - timedelta(days=30)).isoformat()]})
    assert statuses == [202, 201, 200]
    assert headers["Content-Disposition"].startswith('attachment; filename="logs_')
    text = data.decode()
    lines = text.splitlines()
    names = [c["name"] for c in store.spec["events"]["columns"]]
    assert lines[0] == ",".join(names) and "request_id" not in lines[0]
    rows = parse(data)
    assert [r["scope"] for r in rows] == ["create:job", "change:frame", "zoom:image"]  # ASC, ties by columns
    assert rows[0]["timestamp"] == ts(timedelta(hours=3))  # UTC, milliseconds
    assert rows[1]["count"] == "3" and rows[1]["payload"] == '{"a":"x,\\"y\\""}'
    assert rows[2]["obj_id"] == "" and rows[2]["payload"] == ""  # NULL -> empty field
    assert ',"",' in lines[1]  # an empty string is "" (not NULL): the round trip keeps it
    # the job is forgotten after the download
    qid_again = export_routes.handle_legacy_get(jobs, {"query_id": ["00000000-0000-4000-8000-000000000000"]})
    assert qid_again.status == 404


@pytest.mark.clickhouse
def test_download_forgets_job_and_deletes_file(store, jobs):
    insert(store, [row()])
    r = export_routes.handle_legacy_get(jobs, {})
    qid = json.loads(r.body)["query_id"]
    job = jobs.wait(qid)
    assert job.path.exists()
    r = export_routes.handle_legacy_get(jobs, {"query_id": [qid], "action": ["download"], "filename": ["../my file.csv"]})
    assert r.status == 200 and r.headers["Content-Disposition"] == 'attachment; filename="my_file.csv"'
    assert not job.path.exists()  # unlinked at once; the open handle still reads it
    assert len(r.body.read().splitlines()) == 2
    r.body.close()
    assert export_routes.handle_legacy_get(jobs, {"query_id": [qid]}).status == 404
    assert list((jobs.directory).iterdir()) == []


@pytest.mark.clickhouse
def test_custom_filename_on_first_call(store, jobs):
    insert(store, [row()])
    _, _, headers = run_legacy(jobs, {"filename": ["events.csv"]})
    assert headers["Content-Disposition"] == 'attachment; filename="events.csv"'


@pytest.mark.clickhouse
@pytest.mark.parametrize("param", ["org_id", "project_id", "task_id", "job_id", "user_id"])
def test_each_filter_narrows(store, jobs, param):
    insert(store, [row(**{param: 1}), row(**{param: 2}), row(**{param: 2}, at=timedelta(hours=2)), row()])
    _, data, _ = run_legacy(jobs, {param: ["2"]})
    rows = parse(data)
    assert len(rows) == 2 and {r[param] for r in rows} == {"2"}


@pytest.mark.clickhouse
def test_time_window_and_default(store, jobs):
    insert(store, [row(at=timedelta(days=d)) for d in (1, 10, 29, 31, 60, 300)])
    assert len(parse(run_legacy(jobs, {})[1])) == 6  # from the beginning until now
    only_to = (NOW - timedelta(days=9)).isoformat()
    assert len(parse(run_legacy(jobs, {"to": [only_to]})[1])) == 5  # 30 days before `to` kept 2
    frm = (NOW - timedelta(days=61)).isoformat()
    to = (NOW - timedelta(days=9)).isoformat()
    assert len(parse(run_legacy(jobs, {"from": [frm], "to": [to]})[1])) == 4
    exact = (NOW - timedelta(days=10)).isoformat()  # both ends inclusive
    assert len(parse(run_legacy(jobs, {"from": [exact], "to": [exact]})[1])) == 1


@pytest.mark.clickhouse
@pytest.mark.parametrize("query,param", [
    ({"org_id": ["x"]}, "org_id"), ({"project_id": ["-3"]}, "project_id"),
    ({"task_id": ["1 OR 1=1"]}, "task_id"), ({"job_id": ["1; DROP TABLE events"]}, "job_id"),
    ({"user_id": ["1) OR (1=1"]}, "user_id"), ({"from": ["not a date"]}, "from"),
    ({"to": ["2024-01-01'; DROP TABLE events; --"]}, "to"),
    ({"from": ["2024-02-01"], "to": ["2024-01-01"]}, "from"),
    ({"action": ["delete"]}, "action"), ({"location": ["cloud_storage"]}, "location"),
])
@pytest.mark.slow
def test_400_cases_and_injection_refused(store, jobs, query, param):
    insert(store, [row()])
    for handler in (export_routes.handle_legacy_get, export_routes.handle_export_post):
        if param == "action" and handler is export_routes.handle_export_post:
            continue
        r = handler(jobs, query)
        assert r.status == 400, (handler, r.body)
        body = json.loads(r.body)
        assert body["parameter"] == param and body["detail"].startswith(param + ":")
    assert store.client.command(f"SELECT count() FROM `{store.database}`.events") == 1  # table intact


@pytest.mark.clickhouse
def test_values_only_as_bound_parameters(store, jobs):
    """Even a value that parses is bound, never pasted: the SQL text holds no request value."""
    window_sql = render(store.spec, "export_window")
    assert "{org_id:Nullable(UInt64)}" in window_sql and "%" not in window_sql
    insert(store, [row(org_id=18446744073709551615)])
    assert len(parse(run_legacy(jobs, {"org_id": ["18446744073709551615"]})[1])) == 1


@pytest.mark.clickhouse
def test_unknown_ids_and_running_and_failed(store, tmp_path):
    import threading
    gate = threading.Event()

    class Slow:
        def __init__(self, client):
            self.client = client

        def __getattr__(self, name):
            gate.wait(10)
            return getattr(self.client, name)

    jobs = ExportJobs(lambda: Slow(store.client), store.spec, tmp_path / "x")
    try:
        assert export_routes.handle_legacy_get(jobs, {"query_id": ["nope"]}).status == 404
        qid = json.loads(export_routes.handle_legacy_get(jobs, {}).body)["query_id"]
        r = export_routes.handle_legacy_get(jobs, {"query_id": [qid]})
        assert r.status == 202 and r.headers["Deprecation"]
        r = export_routes.handle_legacy_get(jobs, {"query_id": [qid], "action": ["download"]})
        assert r.status == 202  # not ready yet: keep polling
        gate.set()
        jobs.wait(qid)
        assert export_routes.handle_legacy_get(jobs, {"query_id": [qid]}).status == 201
    finally:
        gate.set()
        jobs.shutdown()

    class Broken:
        def query(self, *a, **k):
            raise RuntimeError("Code: 241. Memory limit exceeded\nmore")

    jobs = ExportJobs(lambda: Broken(), store.spec, tmp_path / "y")
    try:
        qid = json.loads(export_routes.handle_legacy_get(jobs, {}).body)["query_id"]
        assert jobs.wait(qid).status == "failed"
        r = export_routes.handle_legacy_get(jobs, {"query_id": [qid]})
        detail = json.loads(r.body)["detail"]
        # ClickHouse's text goes to the log, not to the caller; the answer names the request
        assert r.status == 500 and "Memory limit" not in detail and qid in detail and "log" in detail
        assert list((tmp_path / "y").iterdir()) == []
    finally:
        jobs.shutdown()


@pytest.mark.clickhouse
def test_new_flow_post_status_download(store, jobs):
    insert(store, [row(job_id=4), row(job_id=5)])
    r = export_routes.handle_export_post(jobs, {"job_id": ["4"]})
    assert r.status == 202
    rq = json.loads(r.body)["rq_id"]
    jobs.wait(rq)
    r = export_routes.handle_request_status(jobs, rq, base_url="http://h")
    body = json.loads(r.body)
    assert r.status == 200 and body["status"] == "finished"
    assert body["result_url"] == f"http://h/api/events/download?rq_id={rq}"
    assert body["expiry_date"] and body["owner"]["username"] == "local"
    for _ in range(2):  # kept until expiry_date: a broken download can be retried
        r = export_routes.handle_download(jobs, {"rq_id": [rq]})
        assert r.status == 200 and len(parse(r.body.read())) == 1
        r.body.close()
    assert export_routes.handle_request_status(jobs, rq).status == 200
    path = jobs.get(rq).path
    assert export_routes.handle_cancel(jobs, rq).status == 200
    assert not path.exists() and export_routes.handle_download(jobs, {"rq_id": [rq]}).status == 404
    assert export_routes.handle_request_status(jobs, rq).status == 404
    assert export_routes.handle_cancel(jobs, rq).status == 404
    assert export_routes.handle_download(jobs, {}).status == 400


@pytest.mark.clickhouse
def test_expiry_after_an_hour(store, tmp_path):
    now = [1_000_000.0]
    jobs = ExportJobs(lambda: store.client, store.spec, tmp_path / "e", clock=lambda: now[0])
    try:
        insert(store, [row()])
        qid = json.loads(export_routes.handle_legacy_get(jobs, {}).body)["query_id"]
        path = jobs.wait(qid).path
        now[0] += 3599
        assert export_routes.handle_legacy_get(jobs, {"query_id": [qid]}).status == 201
        now[0] += 2
        assert export_routes.handle_legacy_get(jobs, {"query_id": [qid]}).status == 404
        assert not path.exists()
    finally:
        jobs.shutdown()


@pytest.mark.clickhouse
def test_windows_concatenate_to_the_global_order(store):
    """Small windows (forcing many, and minute-level cuts) give the same bytes as one window."""
    rows = [row(at=timedelta(minutes=m, milliseconds=m % 7), user_id=m % 5, obj_val=str(m))
            for m in range(0, 600, 3)] + [row(at=timedelta(minutes=5), user_id=u) for u in range(30)]
    insert(store, rows)
    f = parse_filters({})
    one, many = io.BytesIO(), io.BytesIO()
    n1 = export.write_csv(store.client, store.spec, f, one, chunk_rows=10**9)
    seen = []
    n2 = export.write_csv(store.client, store.spec, f, many, progress=lambda d, t: seen.append((d, t)),
                          chunk_rows=7)
    assert n1 == n2 == len(rows) and one.getvalue() == many.getvalue()
    assert len(seen) > 10 and seen[-1] == (len(rows), len(rows))


@pytest.mark.clickhouse
def test_cli_export_to_file(store, tmp_path, capsys):
    from cvat_analytics.cli import main
    insert(store, [row(task_id=9), row(task_id=8)])
    out = tmp_path / "e.csv"
    assert main(["export", "--dsn", store.dsn, "--spec", str(store.spec_path), "--task-id", "9", "-o", str(out)]) == 0
    assert len(parse(out.read_bytes())) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".e.csv")] == []  # no temp left
    assert main(["export", "--dsn", store.dsn, "--spec", str(store.spec_path), "--task-id", "x"]) == 2
    assert "--task-id" in capsys.readouterr().err


MEMORY_SCRIPT = textwrap.dedent("""
    import json, re, sys, time
    sys.path.insert(0, {repo!r})
    from cvat_analytics.store import connect
    from cvat_analytics.migrate import migrate
    from cvat_analytics import export
    from cvat_analytics_generator.spec import load_spec, DEFAULT_SPEC
    def kb(field):
        return int(re.search(field + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1))
    n = int(sys.argv[2])
    chunk_rows = int(sys.argv[4]) if len(sys.argv) > 4 else 10_000
    spec = load_spec(DEFAULT_SPEC)
    c = connect(sys.argv[1])
    if sys.argv[3] == 'prepare':
      migrate(c, spec, log=lambda *_: None)
      # no refresh in the export's process: a refreshable view runs as the engine opens
      # (whatever its schedule), and its memory is not the export's
      for view in ('working_time_refresh', 'working_time_refresh_plan', 'productivity_refresh'):
          c.command('DROP VIEW cvat.' + view + ' SYNC')
      c.command('''INSERT INTO cvat.events (scope, source, timestamp, duration, user_id, job_id, user_name, payload)
        SELECT 'draw:object', 'client', now64(3) - toIntervalMillisecond(number * 9973 % 2000000000),
               number % 1000, number % 97, number % 5000, concat('user', toString(number % 97)),
               concat('{{"request":{{"id":"', toString(generateUUIDv4()), '"}},"text":"', repeat('x', 100), '"}}')
        FROM numbers(''' + str(n) + ')')
      c.command('OPTIMIZE TABLE cvat.events FINAL')
      sys.exit(0)
    # The peak from here on (Linux resets VmHWM on a write of 5), after a read of every row
    # and an export of one job's few rows: opening the engine, its first read of the part and
    # the first export's one-off allocations are not what the row count costs (the refresh
    # that once ran here read every row first too).
    c.command('SELECT count() FROM cvat.events WHERE NOT ignore(*)')
    with open('/dev/null', 'wb') as fh:
        export.write_csv(c, spec, export.parse_filters({{"job_id": ["1"]}}), fh, chunk_rows=10_000)
    open('/proc/self/clear_refs', 'w').write('5')
    base = kb('VmRSS')
    t = time.time()
    with open('/dev/null', 'wb') as fh:
        rows = export.write_csv(c, spec, export.parse_filters({{}}), fh, chunk_rows=chunk_rows)
    peak = kb('VmHWM')
    print(json.dumps({{"rows": rows, "base_kb": base, "peak_kb": peak, "seconds": time.time() - t}}))
""")


@pytest.mark.slow(27)
@pytest.mark.clickhouse
def test_memory_flat_with_row_count(tmp_path):
    """Peak RSS of an export of 200k rows stays within 30 MB of one of 20k rows (each in its
    own process and chdb path, warmed by a read of every row and a small export): growth is
    bounded by the sort window, not the export. Windows of 10k rows here, so both exports span
    several (20k: 2, 200k: 20); measured +16 to +23 MB and +30 to +40 MB, the difference 7 to
    20 MB in six runs. And each window's CSV is streamed, not held: the 200k rows in the
    shipped windows of 100k rows grow it by less than 70 MB more than in windows of 10k."""
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_SCRIPT.format(repo=str(REPO)))
    results = {}
    for n in (20_000, 200_000):
        for step in ("prepare", "export"):  # the export runs in a fresh process: its own peak
            out = subprocess.run([sys.executable, str(script), f"chdb://{tmp_path / f'db{n}'}", str(n), step],
                                 capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr[-2000:]
        results[n] = json.loads(out.stdout.strip().splitlines()[-1])
        assert results[n]["rows"] == n
    small, big = results[20_000], results[200_000]
    growth_small = small["peak_kb"] - small["base_kb"]
    growth_big = big["peak_kb"] - big["base_kb"]
    print(f"export peak growth: 20k rows {growth_small / 1024:.0f} MB, 200k rows {growth_big / 1024:.0f} MB")
    assert growth_big - growth_small < 30 * 1024, results

    # The 200k rows again in the shipped windows (writer.CHUNK_ROWS, 100,000 rows, ~22 MB of CSV
    # each): the engine sorts a window spilling past 16 MB and hands its CSV over block by block.
    # Measured +30 to +38 MB over the 10k windows; +119 to +176 MB while each window was read
    # whole before its first byte was written (clickhouse-connect's chdb backend does that for
    # a call given settings of its own, as the export's limits once were).
    out = subprocess.run([sys.executable, str(script), f"chdb://{tmp_path / 'db200000'}", "200000", "export",
                          str(CHUNK_ROWS)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    shipped = json.loads(out.stdout.strip().splitlines()[-1])
    assert shipped["rows"] == 200_000
    growth_shipped = shipped["peak_kb"] - shipped["base_kb"]
    print(f"windows of {CHUNK_ROWS} rows: {growth_shipped / 1024:.0f} MB")
    assert growth_shipped - growth_big < 70 * 1024, (shipped, big)


# -- bounds on what exports may take (embedded.export) ------------------------------
def test_files_left_by_a_crash_are_removed_at_start(tmp_path):
    directory = tmp_path / "exports"
    directory.mkdir()
    left = [directory / f"{export.jobs.uuid.uuid4()}.csv", directory / f"{export.jobs.uuid.uuid4()}.csv.part"]
    for path in left:
        path.write_bytes(b"scope\n" * 1000)
    (directory / "README.txt").write_text("not an export: kept")
    jobs = ExportJobs(lambda: None, {}, directory)
    try:
        assert jobs.removed_at_start == 2
        assert sorted(p.name for p in directory.iterdir()) == ["README.txt"]
    finally:
        jobs.shutdown()


def export_limits(**changes) -> export.ExportLimits:
    return export.ExportLimits(**changes)


@pytest.mark.clickhouse
def test_disk_bound_fails_a_job_that_would_pass_it_and_refuses_new_ones(store, tmp_path):
    insert(store, [row(job_id=n % 3, user_name="u" * 50) for n in range(60)])
    probe = ExportJobs(lambda: store.client, store.spec, tmp_path / "probe")
    size = probe.wait(probe.submit(parse_filters({})).id).path.stat().st_size
    probe.shutdown()

    jobs = ExportJobs(lambda: store.client, store.spec, tmp_path / "d", limits=export_limits(max_disk_bytes=size))
    try:
        first = jobs.wait(jobs.submit(parse_filters({})).id)
        assert first.status == "finished"  # exactly fills the bound
        with pytest.raises(export.ExportRefused) as refused:
            jobs.submit(parse_filters({}))
        assert refused.value.status == 507 and refused.value.limit == "embedded.export.max_disk_bytes"
        assert 1 <= refused.value.retry_after <= 3600
        r = export_routes.handle_export_post(jobs, {})
        assert r.status == 507 and r.headers["Retry-After"] and b"max_disk_bytes" in r.body
        jobs.cancel(first.id)  # the file is gone: room again, but not for two of it
        small = jobs.wait(jobs.submit(parse_filters({"job_id": ["1"]})).id)
        assert small.status == "finished"
        big = jobs.wait(jobs.submit(parse_filters({})).id)
        assert big.status == "failed" and "embedded.export.max_disk_bytes" in big.reason
        names = sorted(p.name for p in (tmp_path / "d").iterdir())
        assert names == [f"{small.id}.csv"]  # the failed one left no part file
        r = export_routes.handle_download(jobs, {"rq_id": [big.id]})
        assert r.status == 500 and "max_disk_bytes" in json.loads(r.body)["detail"]
    finally:
        jobs.shutdown()


@pytest.mark.clickhouse
def test_row_and_time_bounds_fail_the_job_naming_the_limit(store, tmp_path):
    insert(store, [row(), row(), row(job_id=1)])
    jobs = ExportJobs(lambda: store.client, store.spec, tmp_path / "r", limits=export_limits(max_rows=2))
    try:
        job = jobs.wait(jobs.submit(parse_filters({})).id)
        assert job.status == "failed" and "3 rows" in job.reason and "embedded.export.max_rows" in job.reason
        assert [p.name for p in (tmp_path / "r").iterdir()] == []
        narrower = jobs.wait(jobs.submit(parse_filters({"job_id": ["1"]})).id)
        assert narrower.status == "finished" and narrower.rows == 1
    finally:
        jobs.shutdown()
    jobs = ExportJobs(lambda: store.client, store.spec, tmp_path / "t", limits=export_limits(max_seconds=1e-9))
    try:
        job = jobs.wait(jobs.submit(parse_filters({})).id)
        assert job.status == "failed" and "embedded.export.max_seconds" in job.reason
        assert list((tmp_path / "t").iterdir()) == []
    finally:
        jobs.shutdown()
