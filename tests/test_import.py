"""`cvat-analytics import`: formats, exact timestamps, all-or-nothing, --skip-invalid, stdin, the real CLI."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cvat_analytics import importer
from cvat_analytics.importer import run_import

pytestmark = pytest.mark.clickhouse

CLI = Path(sys.executable).with_name("cvat-analytics")
BASE = int(time.time()) - 3 * 86400  # recent: older rows may be dropped by the retention TTL


def iso_z(seconds: int, fraction: str) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction}Z"


def cvat_events(request_id: str = "r-1") -> list[dict]:
    """Server events as CVAT's server logs them, and client events with ISO timestamps."""
    payload = json.dumps({"request": {"id": request_id, "user_agent": "pytest"}})
    return [
        {"scope": "create:task", "source": "server", "timestamp": f"{BASE}.123456", "obj_id": 5,
         "task_id": 5, "project_id": 1, "user_id": 2, "user_name": "ann", "org_id": None, "payload": payload},
        {"scope": "update:task", "source": "server", "timestamp": f"{BASE + 1}.000999", "obj_name": "name",
         "obj_val": "new", "task_id": 5, "user_id": 2, "payload": payload},
        {"scope": "load:job", "source": "client", "timestamp": iso_z(BASE + 2, "456"), "job_id": 9,
         "user_id": 2, "duration": 1500, "payload": "{}"},
        {"scope": "change:frame", "source": "client", "timestamp": iso_z(BASE + 3, "789999"), "job_id": 9,
         "user_id": 2, "count": 3, "duration": 20, "extra": "ignored"},
    ]
EXPECTED_MS = [BASE * 1000 + 123, (BASE + 1) * 1000, (BASE + 2) * 1000 + 456, (BASE + 3) * 1000 + 789]


def write_array(path: Path, events: list) -> Path:
    path.write_text("[\n" + ",\n".join(json.dumps(e) for e in events) + "\n]\n")
    return path


def write_ndjson(path: Path, events: list) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events))
    return path


def demo_events(n: int) -> list[dict]:
    """Realistic CVAT events of the last days: NULL columns, payloads, both sources."""
    from cvat_analytics.demo import Demo, to_row

    return [json.loads(to_row(e)) for e in Demo(seed=5, days=3, now_ms=int(time.time() * 1000)).events(n)]


def count(store) -> int:
    return int(store.client.command("SELECT count() FROM {db:Identifier}.events", parameters={"db": store.database}))


def stored_ms(store) -> list[int]:
    rows = store.client.query(
        "SELECT toUnixTimestamp64Milli(timestamp) FROM {db:Identifier}.events ORDER BY timestamp",
        parameters={"db": store.database}).result_rows
    return [r[0] for r in rows]


def test_mixed_epoch_and_iso_timestamps_are_stored_at_the_exact_millisecond(store, tmp_path, capsys):
    assert run_import(store.client, store.spec, str(write_array(tmp_path / "e.json", cvat_events()))) == 0
    assert stored_ms(store) == EXPECTED_MS
    assert capsys.readouterr().out.strip() == "imported 4 events (0 skipped)"
    found = store.client.command(f"SELECT count() FROM `{store.database}`.events WHERE request_id = {{id:String}}",
                                 parameters={"id": "r-1"})
    assert int(found) == 2


def test_ndjson_and_a_single_object(store, tmp_path):
    assert run_import(store.client, store.spec, str(write_ndjson(tmp_path / "e.ndjson", cvat_events()))) == 0
    single = tmp_path / "one.json"
    single.write_text(json.dumps(cvat_events()[0] | {"obj_id": 6}, indent=2))
    assert run_import(store.client, store.spec, str(single)) == 0
    assert count(store) == 5


def test_one_bad_ndjson_line_stores_nothing_and_is_named_by_line(store, tmp_path, capsys):
    events = cvat_events()
    events[2] = dict(events[2], count=-1)
    path = write_ndjson(tmp_path / "bad.ndjson", events)
    assert run_import(store.client, store.spec, str(path)) == 1
    err = capsys.readouterr().err
    assert "bad.ndjson: line 3: count: expected an integer 0..65535, got -1" in err
    assert "nothing imported: 1 invalid record(s)" in err
    assert count(store) == 0


def test_broken_ndjson_line_is_one_invalid_record(store, tmp_path, capsys):
    events = [json.dumps(e) for e in cvat_events()]
    events.insert(1, '{"scope": "create:task", "timestamp": ')
    path = write_ndjson(tmp_path / "broken.ndjson", events)
    assert run_import(store.client, store.spec, str(path)) == 1
    assert "line 2: not valid JSON" in capsys.readouterr().err
    assert count(store) == 0
    assert run_import(store.client, store.spec, str(path), skip_invalid=True) == 0
    assert count(store) == 4


def test_one_bad_array_element_stores_nothing_and_is_named_by_index(store, tmp_path, capsys):
    events = cvat_events()
    events[1] = dict(events[1], timestamp="1999-01-01T00:00:00Z")
    path = write_array(tmp_path / "bad.json", events)
    assert run_import(store.client, store.spec, str(path)) == 1
    err = capsys.readouterr().err
    assert "bad.json: index 1: timestamp: expected a time between 2000-01-01" in err
    assert "(line 3)" in err
    assert count(store) == 0


def test_skip_invalid_stores_the_rest_and_reports_each_skipped_record(store, tmp_path, capsys):
    events = cvat_events()
    events.insert(1, {"scope": "create:task", "source": "server"})
    events.append("not an object")
    path = write_array(tmp_path / "some-bad.json", events)
    assert run_import(store.client, store.spec, str(path), skip_invalid=True) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "imported 4 events (2 skipped)"
    assert "skipped index 1: timestamp: required, missing (line 3)" in captured.err
    assert "skipped index 5: expected a JSON object" in captured.err
    assert stored_ms(store) == EXPECTED_MS


def test_broken_array_syntax_stores_nothing_even_with_skip_invalid(store, tmp_path, capsys):
    path = tmp_path / "truncated.json"
    path.write_text(write_array(tmp_path / "full.json", cvat_events()).read_text()[:-40])
    assert run_import(store.client, store.spec, str(path), skip_invalid=True) == 1
    assert "the array cannot be read past this point" in capsys.readouterr().err
    assert count(store) == 0


def test_stdin(store, monkeypatch, capsys):
    body = "\n".join(json.dumps(e) for e in cvat_events()).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    assert run_import(store.client, store.spec, "-") == 0
    assert "imported 4 events" in capsys.readouterr().out
    assert stored_ms(store) == EXPECTED_MS


def test_large_file_in_batches_across_read_chunks(store, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(importer, "CHUNK", 97)  # every element crosses a chunk boundary somewhere
    events = [dict(cvat_events()[0], obj_id=i, timestamp=f"{BASE + i}.5") for i in range(1000)]
    path = write_array(tmp_path / "big.json", events)
    assert run_import(store.client, store.spec, str(path), batch_size=128) == 0
    assert "imported 1000 events (0 skipped)" in capsys.readouterr().out
    assert count(store) == 1000
    assert store.client.command(f"SELECT sum(obj_id) FROM `{store.database}`.events") == sum(range(1000))


def test_unknown_formats_and_a_csv_with_other_columns(store, tmp_path, capsys):
    csv = tmp_path / "events.csv"
    csv.write_text("scope,obj_name,obj_id\ncreate:task,,1\n")
    assert run_import(store.client, store.spec, str(csv)) == 1
    assert "line 1: the header is not CVAT's events columns" in capsys.readouterr().err
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    assert run_import(store.client, store.spec, str(junk)) == 1
    assert "not a JSON array, NDJSON or CVAT CSV file" in capsys.readouterr().err
    assert run_import(store.client, store.spec, str(tmp_path / "missing.json")) == 1
    assert "cannot read" in capsys.readouterr().err


def test_a_database_without_the_table_says_to_migrate(store, tmp_path, capsys):
    spec = {**store.spec, "clickhouse": {**store.spec["clickhouse"], "database": "not_migrated_" + uuid.uuid4().hex[:8]}}
    assert run_import(store.client, spec, str(write_array(tmp_path / "e.json", cvat_events()))) == 1
    assert "run `cvat-analytics migrate`" in capsys.readouterr().err


def test_the_real_cli_in_its_own_process(store, tmp_path):
    """A new process opens its own chdb path: migrate, import, query through the installed CLI."""
    dsn = f"chdb://{tmp_path / 'data'}"
    spec = str(store.spec_path)
    run = lambda *args, **kw: subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=180, **kw)
    assert run("migrate", "--dsn", dsn, "--spec", spec).returncode == 0
    bad = write_ndjson(tmp_path / "bad.ndjson", cvat_events() + [{"scope": "load:job", "timestamp": "soon"}])
    result = run("import", "--dsn", dsn, "--spec", spec, str(bad))
    assert result.returncode == 1 and "line 5: timestamp" in result.stderr, result.stderr
    result = run("import", "--dsn", dsn, "--spec", spec, "--skip-invalid", "--batch-size", "3", str(bad))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported 4 events (1 skipped)"
    result = run("import", "--dsn", dsn, "--spec", spec, "-", input=json.dumps(cvat_events("r-2")[0]))
    assert result.returncode == 0 and "imported 1 events" in result.stdout, result.stderr
    query = f"SELECT toUnixTimestamp64Milli(timestamp) FROM {store.database}.events ORDER BY timestamp"
    result = run("query", "--dsn", dsn, "--spec", spec, "--format", "csv", query)
    assert result.returncode == 0, result.stderr
    values = [int(v) for v in result.stdout.split() if v.isdigit()]
    assert values == sorted(EXPECTED_MS + [EXPECTED_MS[0]])


SAMPLE_NDJSON = (
    '{"a": null, "b": true, "c": -1.5e3, "d": "é\\"x", "e": [false, {}]}\n'
    '\n'
    '{"a": }\n'
    '{"ok": -Infinity}   {"same_line": 2}\n'
    '{"cut": "x\n'
    '{"last": 1}'
).encode()


def read_all(data: bytes):
    source = importer.ByteSource(io.BytesIO(data))
    reader = importer.READERS[importer.detect_format(source.start())]
    return [(r.unit, r.index, r.value, r.problem) for r in reader(source, None)]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 13, 64])
def test_reading_does_not_depend_on_where_chunks_end(monkeypatch, chunk):
    expected = read_all(SAMPLE_NDJSON)
    assert [r[1] for r in expected] == [1, 3, 4, 4, 5, 6]
    assert [r[3] is None for r in expected] == [True, False, True, True, False, True]
    monkeypatch.setattr(importer, "CHUNK", chunk)
    assert read_all(SAMPLE_NDJSON) == expected
    array = b"[" + b",".join(json.dumps(e).encode() for e in cvat_events()) + b"]"
    assert [r[2] for r in read_all(array)] == cvat_events()


CVAT_CSV = """scope,obj_name,obj_id,obj_val,source,timestamp,count,duration,project_id,task_id,job_id,user_id,user_name,user_email,org_id,org_slug,payload,access_token_id
create:task,my task,5,,server,2026-03-01 10:00:00.123000+00:00,,0,1,5,,2,ann,ann@example.com,,,"{""request"": {""id"": ""r-1""}}",
change:frame,,,7,client,2026-03-01 10:00:05+00:00,1,1500,1,5,9,2,ann,ann@example.com,3,acme,,
"""


def test_cvat_csv_export_imports_with_exact_times_and_nulls(store, tmp_path):
    """CVAT writes str(datetime) timestamps and None as empty fields; payload stays text."""
    path = tmp_path / "logs.csv"
    path.write_text(CVAT_CSV)
    assert run_import(store.client, store.spec, str(path)) == 0
    rows = store.client.query(
        f"SELECT scope, toUnixTimestamp64Milli(timestamp), job_id, org_id, payload, request_id, duration "
        f"FROM `{store.database}`.events ORDER BY timestamp").result_rows
    assert rows == [
        ("create:task", 1772359200123, None, None, '{"request": {"id": "r-1"}}', "r-1", 0),
        ("change:frame", 1772359205000, 9, 3, None, "", 1500),
    ]


@pytest.mark.slow
def test_export_import_export_gives_the_same_bytes(tmp_path):
    """The round trip through the real CLI, each store in its own process and path."""
    def cli(*args):
        result = subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    a, b = f"chdb://{tmp_path / 'a'}", f"chdb://{tmp_path / 'b'}"
    cli("migrate", "--dsn", a)
    cli("demo", "--dsn", a, "--events", "3000", "--days", "3", "--seed", "11")
    cli("export", "--dsn", a, "-o", str(tmp_path / "1.csv"))
    cli("migrate", "--dsn", b)
    cli("import", "--dsn", b, str(tmp_path / "1.csv"))
    cli("export", "--dsn", b, "-o", str(tmp_path / "2.csv"))
    first, second = (tmp_path / "1.csv").read_bytes(), (tmp_path / "2.csv").read_bytes()
    assert first.count(b"\n") > 2000
    assert first == second


@pytest.mark.clickhouse
def test_a_reimport_stores_nothing_whatever_the_batch_size_and_says_so(store, tmp_path, capsys):
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps({"scope": "load:job", "source": "client", "user_id": 5,
                                        "timestamp": f"2026-11-0{1 + i % 9}T10:00:00.{i:03d}Z"}) + "\n"
                            for i in range(300)))
    count = lambda: int(store.client.command(f"SELECT count() FROM `{store.database}`.events"))
    assert run_import(store.client, store.spec, str(path), batch_size=100) == 0
    assert capsys.readouterr().out.strip() == "imported 300 events (0 skipped)"
    assert run_import(store.client, store.spec, str(path), batch_size=7) == 0
    said = capsys.readouterr().out.strip()
    assert said.startswith("nothing stored: these 300 events were imported on ") and "--again" in said
    # The same events in another format (a JSON array) are the same content.
    array = tmp_path / "events.json"
    array.write_text(json.dumps([json.loads(line) for line in path.read_text().splitlines()]))
    assert run_import(store.client, store.spec, str(array), batch_size=1000) == 0
    assert capsys.readouterr().out.startswith("nothing stored")
    assert count() == 300
    assert run_import(store.client, store.spec, str(path), batch_size=100, again=True) == 0
    assert count() == 600


@pytest.mark.clickhouse
def test_an_import_cut_short_is_finished_by_running_it_again(store, tmp_path, capsys, monkeypatch):
    """The first attempt stores 2 of 3 batches and fails; the second stores the rest once and
    says how many were there already."""
    from cvat_analytics import importer

    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps({"scope": "load:job", "source": "client", "user_id": 6,
                                        "timestamp": f"2026-11-02T10:00:{i % 60:02d}.{i:03d}Z"}) + "\n"
                            for i in range(30)))
    real = importer.store_new
    calls = []

    def failing_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("connection reset")
        return real(*args, **kwargs)

    monkeypatch.setattr(importer, "store_new", failing_third)
    assert run_import(store.client, store.spec, str(path), batch_size=10) == 1
    assert "INSERT failed after 20 of 30 events" in capsys.readouterr().err
    monkeypatch.setattr(importer, "store_new", real)
    assert run_import(store.client, store.spec, str(path), batch_size=10) == 0
    assert capsys.readouterr().out.strip() == "imported 10 events, 20 were already stored (0 skipped)"
    assert int(store.client.command(f"SELECT count() FROM `{store.database}`.events")) == 30


@pytest.mark.clickhouse
def test_an_export_imported_back_adds_nothing(store, tmp_path, capsys):
    """A restore: the store exported as CVAT's CSV, imported back: every event is recognised
    (NULL columns, a payload, equal timestamps and all), nothing is stored twice; the CSV's
    events are each looked up by every column CVAT exports."""
    from cvat_analytics import export
    from cvat_analytics.export.writer import write_csv

    events = demo_events(400)
    path = write_ndjson(tmp_path / "first.ndjson", events)
    assert run_import(store.client, store.spec, str(path)) == 0
    before = count(store)
    csv_path = tmp_path / "export.csv"
    with csv_path.open("wb") as f:
        assert write_csv(store.client, store.spec, export.parse_filters({}), f) == before
    capsys.readouterr()
    assert run_import(store.client, store.spec, str(csv_path), batch_size=97) == 0
    assert capsys.readouterr().out.strip() == f"imported 0 events, {before} were already stored (0 skipped)"
    assert count(store) == before


@pytest.mark.clickhouse
def test_an_overlapping_file_stores_only_its_new_events(store, tmp_path, capsys):
    """Two files that share half their events (two CVAT exports of overlapping weeks): the
    second stores its new half; an event differing in one column only is new."""
    events = demo_events(300)
    first = write_ndjson(tmp_path / "a.ndjson", events[:200])
    second_events = events[100:] + [dict(events[0], obj_val="changed")]
    second = write_ndjson(tmp_path / "b.ndjson", second_events)
    assert run_import(store.client, store.spec, str(first)) == 0
    capsys.readouterr()
    assert run_import(store.client, store.spec, str(second)) == 0
    assert capsys.readouterr().out.strip() == "imported 101 events, 100 were already stored (0 skipped)"
    assert count(store) == 301
    # --again stores a file once more, as before.
    assert run_import(store.client, store.spec, str(second), again=True) == 0
    assert count(store) == 301 + 201


def test_a_file_of_more_months_than_one_insert_takes_is_stored_in_month_bounded_batches(store, tmp_path, capsys):
    """With retention_days 0 a file may span years; the engine writes at most
    max_partitions_per_insert_block (100) months in one INSERT, so a batch of 120 months
    failed, and "run the same import again" failed the same way."""
    from .test_ingest_groups import keep_forever, month_events

    spec = keep_forever(store)
    path = write_ndjson(tmp_path / "decade.ndjson", month_events("decade", 0, 120))
    assert run_import(store.client, spec, str(path)) == 0, capsys.readouterr().err
    assert "imported 120 events (0 skipped)" in capsys.readouterr().out
    assert count(store) == 120
    assert store.client.command(f"SELECT uniqExact(toYYYYMM(timestamp)) FROM `{store.database}`.events") == 120
    # The cuts depend on the rows alone: the same file again is recognised, not stored twice.
    assert run_import(store.client, spec, str(path)) == 0 and count(store) == 120


def test_batches_end_before_a_month_past_the_bound_and_at_the_batch_size():
    lines = [b'{"scope":"x","timestamp":"20%02d-%02d-01 00:00:00.000"}\n' % (y, m) for y in (1, 2) for m in range(1, 13)]
    spool = io.BytesIO(b"".join(lines * 2))  # 24 months, then the same 24 again
    sizes = [rows for _, rows in importer._batches(spool, 1000, max_months=10)]
    assert sizes == [10, 10, 10, 10, 8]
    spool.seek(0)
    assert [rows for _, rows in importer._batches(spool, 7, max_months=10)] == [7] * 6 + [6]
    spool.seek(0)
    assert [rows for _, rows in importer._batches(spool, 1000, max_months=0)] == [48]


def test_a_cvat_export_that_ends_with_remote_addr_imports(store, tmp_path):
    """CVAT before 2.66 exports `SELECT *`: on a table with remote_addr (ours from migration
    0015, CVAT's own from 2.66's init.py) its CSV ends with that column."""
    lines = CVAT_CSV.splitlines()
    path = tmp_path / "logs.csv"
    path.write_text("\n".join([lines[0] + ",remote_addr", lines[1] + ",", lines[2] + ",10.0.0.7"]) + "\n")
    assert run_import(store.client, store.spec, str(path)) == 0
    rows = store.client.query(f"SELECT scope, remote_addr FROM `{store.database}`.events ORDER BY timestamp").result_rows
    assert rows == [("create:task", None), ("change:frame", "10.0.0.7")]


@pytest.mark.clickhouse
@pytest.mark.parametrize("batch_size", [2, 50_000])
def test_an_event_repeated_in_a_file_is_stored_once_whatever_the_batch_size(store, tmp_path, capsys, batch_size):
    """Identical events are one event whether a batch boundary separates them or not: a file
    holding each event twice stored both copies when they fell in one batch, one when they
    fell in two, so the store depended on --batch-size."""
    events = cvat_events()
    path = write_ndjson(tmp_path / "twice.ndjson", [events[0], events[1], events[0], events[1]])
    assert run_import(store.client, store.spec, str(path), batch_size=batch_size) == 0
    assert capsys.readouterr().out.strip() == "imported 2 events, 2 were already stored (0 skipped)"
    assert count(store) == 2
