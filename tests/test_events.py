"""The event contract: what normalize() accepts, what it stores, and what it refuses."""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvat_analytics.events import EventContract, EventError, format_ms, normalize
from cvat_analytics.store import insert_json_rows
from cvat_analytics_generator.spec import load_spec

SPEC = load_spec()
# Retention off for the contract's own bounds (2000..now+1 day); retention has its test below.
CONTRACT = EventContract({**SPEC, "clickhouse": {**SPEC["clickhouse"], "retention_days": 0}})
UTC = timezone.utc
NOW = int(time.time())
YESTERDAY = NOW - 86400


def event(**fields):
    return {"scope": "create:task", "source": "server", "timestamp": f"{YESTERDAY}.5", **fields}


def stored_ts(value) -> str:
    return CONTRACT.normalize(event(timestamp=value), 0)["timestamp"]


def iso(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_epoch_seconds_string_is_exact_to_the_millisecond():
    assert stored_ts(f"{YESTERDAY}.123456") == format_ms(YESTERDAY * 1000 + 123)
    assert stored_ts(f"{YESTERDAY}.999999") == format_ms(YESTERDAY * 1000 + 999)  # truncated, not rounded
    assert stored_ts(str(YESTERDAY)) == format_ms(YESTERDAY * 1000)
    assert stored_ts(YESTERDAY) == format_ms(YESTERDAY * 1000)
    assert stored_ts(float(f"{YESTERDAY}.123456")) == format_ms(YESTERDAY * 1000 + 123)


def test_iso_timestamps_with_z_offsets_or_no_zone_are_utc():
    assert stored_ts(iso(YESTERDAY) + ".123Z") == format_ms(YESTERDAY * 1000 + 123)
    assert stored_ts(iso(YESTERDAY) + ".1239Z") == format_ms(YESTERDAY * 1000 + 123)
    assert stored_ts(iso(YESTERDAY) + ".5") == format_ms(YESTERDAY * 1000 + 500)
    assert stored_ts(iso(YESTERDAY + 7200) + ".250+02:00") == format_ms(YESTERDAY * 1000 + 250)
    assert stored_ts(iso(YESTERDAY - 3600 * 5 - 1800) + "-0530") == format_ms(YESTERDAY * 1000)
    assert stored_ts(iso(YESTERDAY).replace("T", " ")) == format_ms(YESTERDAY * 1000)


def test_format_is_what_clickhouse_reads_as_utc():
    assert format_ms(1704110400123) == "2024-01-01 12:00:00.123"


@pytest.mark.parametrize("value, expected", [
    ("1999-12-31T23:59:59.999Z", "between 2000-01-01 and one day from now"),
    ("0", "between 2000-01-01"),
    # ids of their own: the values change each second, and xdist's workers must collect the same ids
    pytest.param(str(NOW * 1000), "epoch milliseconds? send seconds", id="now-in-milliseconds"),
    pytest.param(iso(NOW + 2 * 86400) + "Z", "one day from now", id="two-days-ahead"),
    ("yesterday", "ISO-8601"),
    ("2024-02-30T00:00:00Z", "a real date and time"),
    (True, "epoch seconds or ISO-8601"),
    ({"t": 1}, "epoch seconds or ISO-8601"),
], ids=["before-2000", "zero", "milliseconds", "future", "word", "no-such-date", "bool", "object"])  # named, not
# by their value: NOW differs between parallel workers, which must collect the same tests
def test_bad_timestamps_are_refused_with_what_was_expected(value, expected):
    with pytest.raises(EventError) as error:
        CONTRACT.normalize(event(timestamp=value), 7)
    assert error.value.index == 7 and error.value.field == "timestamp"
    assert expected in str(error.value) and str(error.value).startswith("index 7: timestamp:")


def test_the_year_2000_is_the_first_accepted_moment():
    assert stored_ts("2000-01-01T00:00:00Z") == "2000-01-01 00:00:00.000"


def test_events_older_than_the_retention_are_refused_not_silently_dropped():
    contract = EventContract({**SPEC, "clickhouse": {**SPEC["clickhouse"], "retention_days": 30}})
    assert contract.normalize(event(timestamp=f"{NOW - 29 * 86400}"), 0)
    with pytest.raises(EventError) as error:
        contract.normalize(event(timestamp=f"{NOW - 31 * 86400}"), 4)
    assert str(error.value).startswith("index 4: timestamp: older than clickhouse.retention_days (30 days)")


def test_ids_are_unsigned_64_bit_integers_or_digit_strings_or_null():
    row = CONTRACT.normalize(event(obj_id="42", task_id=2**64 - 1, job_id=None, user_id=7.0), 0)
    assert (row["obj_id"], row["task_id"], row["job_id"], row["user_id"]) == (42, 2**64 - 1, None, 7)
    for bad in (-1, 2**64, "4.5", 4.5, True, "", " 1", "0x10", [1]):
        with pytest.raises(EventError, match="obj_id: expected an integer"):
            CONTRACT.normalize(event(obj_id=bad), 0)


def test_count_and_duration_ranges_and_defaults():
    row = CONTRACT.normalize(event(count=65535), 0)
    assert row["count"] == 65535 and row["duration"] == 0
    assert CONTRACT.normalize(event(duration=2**32 - 1), 0)["duration"] == 2**32 - 1
    with pytest.raises(EventError, match=r"count: expected an integer 0\.\.65535, got 65536"):
        CONTRACT.normalize(event(count=65536), 0)
    with pytest.raises(EventError, match="duration"):
        CONTRACT.normalize(event(duration=2**32), 0)


def test_strings_obj_val_and_payload():
    row = CONTRACT.normalize(event(obj_val=3.5, obj_name="name", payload={"request": {"id": "r1"}}), 0)
    assert row["obj_val"] == "3.5" and row["obj_name"] == "name"
    assert row["payload"] == '{"request":{"id":"r1"}}'
    assert CONTRACT.normalize(event(obj_val=42), 0)["obj_val"] == "42"
    assert CONTRACT.normalize(event(payload='{"old_value": 1}'), 0)["payload"] == '{"old_value": 1}'
    with pytest.raises(EventError, match="payload: expected a JSON string, got text that is not JSON"):
        CONTRACT.normalize(event(payload="{not json"), 0)
    with pytest.raises(EventError, match="obj_val: expected a string or a number"):
        CONTRACT.normalize(event(obj_val={"a": 1}), 0)
    with pytest.raises(EventError, match="user_name: expected a string"):
        CONTRACT.normalize(event(user_name=5), 0)
    with pytest.raises(EventError, match="lone surrogate"):
        CONTRACT.normalize(event(obj_name="\ud800"), 0)


@pytest.mark.parametrize("payload, words", [
    ("NaN", r"not JSON \(NaN is not JSON\)"), ('{"a": [1, -Infinity]}', r"not JSON \(-Infinity is not JSON\)"),
    ({"a": float("nan")}, "holding NaN or Infinity"), ([float("inf")], "holding NaN or Infinity"),
])
def test_nan_and_infinity_in_a_payload_are_refused_they_are_not_json(payload, words):
    # Python's json reads and writes them; stored, the payload would be text no JSON reader takes.
    with pytest.raises(EventError, match="payload: expected a JSON " + ".*" + words):
        CONTRACT.normalize(event(payload=payload), 0)


def test_scope_is_required_and_checked_against_the_spec_for_server_and_client():
    with pytest.raises(EventError, match="index 3: scope: required"):
        CONTRACT.normalize({"timestamp": f"{YESTERDAY}"}, 3)
    with pytest.raises(EventError, match="index 0: timestamp: required"):
        CONTRACT.normalize({"scope": "load:job"}, 0)
    with pytest.raises(EventError, match="'draw:object' is not a server scope"):
        CONTRACT.normalize(event(scope="draw:object", source="server"), 0)
    with pytest.raises(EventError, match="not a client scope"):
        CONTRACT.normalize(event(scope="create:tsak", source="client"), 0)
    # Other sources (tools, tests) may use any scope; no source is stored as "".
    assert CONTRACT.normalize(event(scope="custom:thing", source="etl"), 0)["source"] == "etl"
    assert CONTRACT.normalize({"scope": "x:y", "timestamp": YESTERDAY}, 0)["source"] == ""


def test_unknown_fields_are_ignored_and_the_row_has_the_spec_columns_in_order():
    row = CONTRACT.normalize(event(zzz=1, request_id="nope"), 0)
    # Then CVAT 2.66+'s client address, which no spec column lists (migration 0015).
    assert list(row) == [c["name"] for c in SPEC["events"]["columns"]] + ["remote_addr"]


def test_not_an_object_and_the_unit_in_messages():
    with pytest.raises(EventError, match=r"^line 12: expected a JSON object"):
        CONTRACT.normalize([1, 2], 12, unit="line")
    assert normalize(event(), 0)["scope"] == "create:task"  # the module function uses the default spec


def test_to_line_is_one_jsoneachrow_line():
    line = CONTRACT.to_line(CONTRACT.normalize(event(obj_name="é"), 0))
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert json.loads(line)["obj_name"] == "é"


# -- properties ---------------------------------------------------------------

EARLIEST_MS = 946684800000  # 2000-01-01
ids = st.none() | st.integers(0, 2**64 - 1)
texts = st.none() | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@st.composite
def valid_events(draw, earliest_ms=EARLIEST_MS):
    """(incoming event, the exact millisecond and the fields it must be stored with)."""
    ms = draw(st.integers(earliest_ms, NOW * 1000))
    sub_ms = draw(st.integers(0, 999))  # microseconds beyond the millisecond: truncated
    seconds, millis = divmod(ms, 1000)
    style = draw(st.sampled_from(["epoch-string", "epoch-number", "iso-z", "iso-offset"]))
    if style == "epoch-string":
        ts = f"{seconds}.{millis:03d}{sub_ms:03d}"
    elif style == "epoch-number":
        ts = seconds if millis == 0 else float(f"{seconds}.{millis:03d}")
    elif style == "iso-z":
        ts = f"{iso(seconds)}.{millis:03d}{sub_ms:03d}Z"
    else:
        minutes = draw(st.integers(-14 * 60, 14 * 60))
        local = datetime.fromtimestamp(seconds, UTC) + timedelta(minutes=minutes)
        sign = "+" if minutes >= 0 else "-"
        ts = local.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    source = draw(st.sampled_from(["server", "client", "other"]))
    scope = draw(st.sampled_from(sorted(SPEC["events"]["scopes"].get(source, ["any:thing"]))))
    fields = {
        "obj_id": draw(ids), "project_id": draw(ids), "task_id": draw(ids), "job_id": draw(ids),
        "user_id": draw(ids), "org_id": draw(ids), "access_token_id": draw(ids),
        "count": draw(st.none() | st.integers(0, 65535)), "duration": draw(st.integers(0, 2**32 - 1)),
        "obj_name": draw(texts), "obj_val": draw(texts), "user_name": draw(texts),
        "user_email": draw(texts), "org_slug": draw(texts),
    }
    payload = draw(st.none() | st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3))
    incoming = {"scope": scope, "source": source, "timestamp": ts, **fields,
                "payload": None if payload is None else json.dumps(payload)}
    expected = {**fields, "scope": scope, "source": source, "timestamp": format_ms(ms),
                "payload": incoming["payload"]}
    return incoming, ms, expected


@given(valid_events())
def test_valid_events_round_trip_exactly(case):
    incoming, _ms, expected = case
    assert CONTRACT.normalize(incoming, 0) == {**{c["name"]: expected[c["name"]] for c in SPEC["events"]["columns"]},
                                               "remote_addr": None}


json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from([c["name"] for c in SPEC["events"]["columns"]] + ["zzz"])


@given(st.one_of(json_junk, st.dictionaries(field_names, json_junk)), st.integers(0, 10**6))
def test_junk_raises_only_event_error(value, index):
    try:
        row = CONTRACT.normalize(value, index)
    except EventError as error:
        assert error.index == index
    else:
        CONTRACT.to_line(row)  # whatever is accepted can be written


@pytest.mark.clickhouse
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Recent timestamps only: rows older than the spec's retention may be dropped by a TTL merge.
@given(st.lists(valid_events(earliest_ms=(NOW - 300 * 86400) * 1000), min_size=1, max_size=5))
def test_valid_events_round_trip_through_clickhouse(store, cases):
    marker = uuid.uuid4().hex  # also keeps each example's insert distinct from the others (dedup)
    lines = [CONTRACT.to_line(CONTRACT.normalize({**incoming, "obj_name": marker}, 0)) for incoming, _, _ in cases]
    insert_json_rows(store.client, store.database, b"".join(lines))
    rows = store.client.query(
        "SELECT toUnixTimestamp64Milli(timestamp), obj_id, task_id, count, duration, user_name, payload "
        "FROM {db:Identifier}.events WHERE obj_name = {m:String}",
        parameters={"db": store.database, "m": marker},
    ).result_rows
    expected = [(ms, e["obj_id"], e["task_id"], e["count"], e["duration"], e["user_name"], e["payload"])
                for _, ms, e in cases]
    assert sorted(map(tuple, rows), key=repr) == sorted(expected, key=repr)
