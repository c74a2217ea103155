"""CVAT's CSV export read back: CVAT's own form, ours, and the round trip."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import pytest

from cvat_analytics import export
from cvat_analytics.export.filters import UTC, fmt_time
from cvat_analytics.cvat_csv import CsvError, is_cvat_csv, read_cvat_csv, to_timestamp
from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec

SPEC = load_spec(DEFAULT_SPEC)
NAMES = [c["name"] for c in SPEC["events"]["columns"]]
HEADER = ",".join(NAMES)


def cvat_file(rows: list[dict]) -> str:
    """A file as CVAT writes it: csv.writer, None -> empty, str(datetime)."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(NAMES)
    for r in rows:
        w.writerow(["" if r.get(n) is None else r[n] for n in NAMES])
    return out.getvalue()


def test_is_cvat_csv():
    assert is_cvat_csv(HEADER + "\r\n", SPEC)
    assert is_cvat_csv(",".join(f'"{n}"' for n in NAMES), SPEC)
    assert is_cvat_csv("\ufeff" + HEADER)
    assert not is_cvat_csv(HEADER + ",request_id", SPEC)
    assert not is_cvat_csv('[{"scope": "x"}]', SPEC)
    assert not is_cvat_csv(",".join(NAMES[:-1]), SPEC)


@pytest.mark.parametrize("text,expected", [
    ("2024-01-01 12:00:00.123000+00:00", "2024-01-01 12:00:00.123"),
    ("2024-01-01 12:00:00+00:00", "2024-01-01 12:00:00.000"),
    ("2024-01-01 12:00:00.123", "2024-01-01 12:00:00.123"),
    ("2024-01-01T12:00:00.1Z", "2024-01-01 12:00:00.100"),
    ("2024-01-01 12:00:00.999999+02:00", "2024-01-01 10:00:00.999"),
    ("garbage", "garbage"),
])
def test_timestamps(text, expected):
    assert to_timestamp(text) == expected


def test_reads_cvat_form():
    text = cvat_file([
        {"scope": "update:job", "obj_name": "state", "obj_id": 7, "obj_val": "completed", "source": "server",
         "timestamp": "2024-01-01 12:00:00.123000+00:00", "count": None, "duration": 0, "job_id": 7,
         "user_id": 1, "user_name": "ann", "payload": '{"old_value": "in progress", "request": {"id": "r"}}'},
        {"scope": "change:frame", "source": "client", "timestamp": "2024-01-01 12:00:01+00:00", "count": 2,
         "duration": 1500, "payload": '{"note": "multi\nline, with \\"quotes\\""}'},
    ])
    got = list(read_cvat_csv(io.StringIO(text, newline=""), SPEC))
    assert [line for line, _ in got] == [2, 3]
    first, second = got[0][1], got[1][1]
    assert first["obj_id"] == 7 and first["job_id"] == 7 and first["count"] is None
    assert first["timestamp"] == "2024-01-01 12:00:00.123" and first["project_id"] is None
    assert json.loads(first["payload"])["old_value"] == "in progress"  # payload stays text
    assert isinstance(first["payload"], str)
    assert second["count"] == 2 and second["duration"] == 1500
    assert second["payload"] == '{"note": "multi\nline, with \\"quotes\\""}'
    assert set(first) == set(NAMES)


def test_quoted_empty_is_empty_string_unquoted_is_null():
    text = HEADER + "\n" + '"draw:object","",,"","client","2024-01-01 00:00:00.000",,0,,,,,,,,,,\n'
    (_, ev), = read_cvat_csv(io.StringIO(text), SPEC)
    assert ev["obj_name"] == "" and ev["obj_id"] is None and ev["obj_val"] == "" and ev["payload"] is None


def test_bad_files():
    with pytest.raises(CsvError, match="line 1"):
        list(read_cvat_csv(io.StringIO("a,b\n1,2\n"), SPEC))
    with pytest.raises(CsvError, match="line 2"):
        list(read_cvat_csv(io.StringIO(HEADER + "\nx,y\n"), SPEC))
    with pytest.raises(CsvError, match="unterminated"):
        list(read_cvat_csv(io.StringIO(HEADER + '\n"x,y\n'), SPEC))
    # a non-integer id is passed on for the event contract to report with the line number
    row = '"s",,abc,,"client","2024-01-01 00:00:00.000",,0,,,,,,,,,,\n'
    (line, ev), = read_cvat_csv(io.StringIO(HEADER + "\n" + row), SPEC)
    assert line == 2 and ev["obj_id"] == "abc"


@pytest.mark.clickhouse
def test_round_trip_byte_identical(store, tmp_path):
    """demo -> export -> read -> event contract -> insert into an empty store -> export: same bytes."""
    from cvat_analytics import demo
    from cvat_analytics.events import EventContract
    from cvat_analytics.store import insert_json_rows

    now_ms = int(__import__("time").time() * 1000)
    rows = [demo.to_row(e) for e in demo.Demo(seed=3, days=5, now_ms=now_ms).events(3000)]
    rows.append(json.dumps({"scope": "draw:object", "source": "client", "obj_name": "", "obj_val": "a\nb,\"c\"",
                            "timestamp": fmt_time(datetime.now(UTC)), "duration": 0,
                            "user_name": "Zoë ✓"}).encode() + b"\n")
    insert_json_rows(store.client, store.database, b"".join(rows))
    filters = export.parse_filters({})
    first = io.BytesIO()
    n = export.write_csv(store.client, store.spec, filters, first)
    assert n > 2800
    store.client.command(f"TRUNCATE TABLE `{store.database}`.events")
    contract = EventContract(store.spec)
    body = b"".join(contract.to_line(contract.normalize(ev, line, unit="line"))
                    for line, ev in read_cvat_csv(io.StringIO(first.getvalue().decode(), newline=""), store.spec))
    insert_json_rows(store.client, store.database, body)
    second = io.BytesIO()
    assert export.write_csv(store.client, store.spec, filters, second) == n
    assert second.getvalue() == first.getvalue()
