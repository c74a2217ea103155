"""Vector's event contract (the `cvat_contract` remap) decides exactly as the embedded ingest.

The rendered VRL program runs in-process (vrl-python, which carries VRL at commit dbfeee5,
0.27.0 plus: Vector 0.54 carries VRL 0.31.0) on what Vector's http_server source would hand it,
and cvat_analytics.events.EventContract on the same event: both must accept with the same row,
or both refuse naming the same field. An event the program keeps is then stored through chdb
with the settings Vector's ClickHouse sink sends: ClickHouse stores the embedded ingest's values.
The config tests follow the rendered graph (sources -> transforms -> sinks) in both Vector
renders, and a dead-letter file is loaded with `cvat-analytics import` once its cause is fixed.
"""
from __future__ import annotations

import io
import json
import re
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from vrl_python import VRLRuntime

from cvat_analytics.events import EventContract, EventError
from cvat_analytics_generator.render import render_all
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.validate import vector_problems
from cvat_analytics.importer import run_import
from cvat_analytics_generator.yaml_load import safe_load
from tests.examples_budget import examples
from tests.test_fuzz_ingest import not_events, not_json, one_bad_event
from tests.test_serve import cvat_batch

SPEC = load_spec()
RENDERS = ("vector/vector.yaml", "vector/vector-cvat.yaml")
CONFIGS = {path: safe_load(text) for path, text in render_all(SPEC).items() if path in RENDERS}
PROGRAM = CONFIGS["vector/vector.yaml"]["transforms"]["cvat_contract"]["source"]
# The program, preceded by what Vector's source does to an event without `timestamp`
# (lib/codecs/src/decoding/format/json.rs at v0.54.0: it inserts its receipt time).
WITHOUT_TIMESTAMP = ".timestamp = now()\n" + PROGRAM
CONTRACT = EventContract(SPEC)
RUNTIME, RUNTIME_UNDATED = VRLRuntime(), VRLRuntime()  # one per program: a runtime caches one compiled program
I64_MAX, U64_MAX = 2**63 - 1, 2**64 - 1
# Function names of VRL 0.31.0 (Vector 0.54's), read from vectordotdev/vrl src/stdlib/*.rs
# at tag v0.31.0 (`fn identifier`): the ones the program may call.
VRL_0_31 = {"abort", "encode_json", "float", "floor", "format_timestamp", "from_unix_timestamp", "includes", "int",
            "is_array", "is_boolean", "is_float", "is_integer", "is_object", "is_string", "is_timestamp", "length",
            "match", "mod", "now", "parse_json", "parse_regex", "parse_timestamp", "replace", "slice", "split",
            "starts_with", "string", "timestamp", "to_int", "to_string", "to_unix_timestamp", "del"}


# --- Vector's side: the http_server source's JSON decoding, then the remap

class Refused(Exception):
    """Vector's source answers 400 for the whole body (serde_json refuses it)."""


def _serde_number(text: str):
    # serde_json (and vrl's From<serde_json::Value>): i64, else u64 -> its digits as a string,
    # else f64; a number past f64 is an error.
    if re.fullmatch(r"-?\d+", text):
        number = int(text)
        if -(2**63) <= number <= I64_MAX:
            return number
        if 0 <= number <= U64_MAX:
            return str(number)
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise Refused("number out of range")
    return value


def _no_surrogates(value, depth: int = 0):
    if depth > 127:  # serde_json's recursion limit
        raise Refused("recursion limit exceeded")
    if isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise Refused("lone surrogate")
    for item in (value.items() if isinstance(value, dict) else value if isinstance(value, list) else ()):
        for part in (item if isinstance(value, dict) else (item,)):
            _no_surrogates(part, depth + 1)


def vector_events(body: bytes) -> list[dict]:
    """What the http_server source (decoding json, lossy false, framing bytes) emits, or Refused."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, parse_int=_serde_number, parse_float=_serde_number,
                           parse_constant=lambda name: (_ for _ in ()).throw(Refused(name)))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Refused(str(exc)) from None
    _no_surrogates(value)
    events = value if isinstance(value, list) else [value]
    if not all(isinstance(e, dict) for e in events):
        raise Refused("Attempted to convert non-Object JSON into an Event.")
    return [dict(e, source_type="http_server", path="/") for e in events]


def vrl_decision(event: dict):
    """('stored', row) or ('refused', field) from the rendered program."""
    try:
        if "timestamp" in event:
            row = RUNTIME.execute(PROGRAM, event).processed_event
        else:
            row = RUNTIME_UNDATED.execute(WITHOUT_TIMESTAMP, event).processed_event
    except RuntimeError as exc:
        found = re.search(r"error\[E000\]: (\w+):", str(exc))
        return "refused", found.group(1) if found else str(exc)
    return "stored", row


def contract_decision(event: dict):
    try:
        return "stored", CONTRACT.normalize(event, 0)
    except EventError as exc:
        return "refused", exc.field


def comparable(row: dict, original: dict) -> dict:
    """A row as ClickHouse stores it: digit strings are UInt64 values; an object payload is
    stored as its JSON (VRL sorts keys and writes 1e22 where Python writes 1e+22)."""
    out = {}
    for name, value in row.items():
        if isinstance(value, str) and name.endswith("_id") and value.isdigit():
            value = int(value)
        if name == "payload" and isinstance(original.get("payload"), (dict, list)):
            value = json.loads(value)
        out[name] = value
    return out


def beyond_vrl(event: dict) -> bool:
    """The one known difference: a payload string Python's json reads and serde_json does not
    (a lone \\ud800 escape, a number past 1e308, nesting past 128). Vector refuses it to the
    dead-letter file; `cvat-analytics import` stores it: nothing is lost."""
    text = event.get("payload")
    if not isinstance(text, str):
        return False
    try:
        json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    except (ValueError, RecursionError):
        return False
    try:
        vector_events(text.encode() if text.lstrip().startswith(("[", "{")) else b"[" + text.encode() + b"]")
    except Refused:
        return True
    return False


ECHO = VRLRuntime()


def numbers_read_apart(seen: dict, sent: dict) -> bool:
    """The other known difference: a JSON number Vector's parser reads differently from
    Python's json. serde_json (built without float_roundtrip in Vector 0.54, as in VRL) may read
    a float with more than 15 significant digits or a large exponent one unit in the last
    place away, and reads an integer past 2^64-1 as a float. It changes the digits of such an
    obj_val (an id that large is refused by both), never a decision."""
    def apart(vector, python) -> bool:
        if isinstance(python, dict) and isinstance(vector, dict):
            return any(apart(vector.get(k), v) for k, v in python.items())
        if isinstance(python, list) and isinstance(vector, list):
            return any(apart(a, b) for a, b in zip(vector, python))
        if isinstance(python, (int, float)) and not isinstance(python, bool):
            return type(vector) is not type(python) or vector != python
        return False

    return apart(ECHO.execute(".", seen).processed_event, sent)


def u64_read_as_text(seen: dict, sent: dict, contract: tuple) -> bool:
    """The third known difference: an integer from 2^63 to 2^64-1 reaches the remap as its
    digits, a string (_serde_number), so where the contract wants a string Vector checks those
    digits as one while serve refuses the number (hypothesis found `source: 9223372036854775808`
    beside a missing timestamp: Vector refused the timestamp, serve the source)."""
    value = sent.get(contract[1]) if contract[0] == "refused" else None
    return (isinstance(value, int) and not isinstance(value, bool) and I64_MAX < value <= U64_MAX
            and seen.get(contract[1]) == str(value))


def same_decision(seen: dict, sent: dict) -> str:
    """`seen`: the event as Vector's source hands it to the remap; `sent`: as serve reads it."""
    vrl, contract = vrl_decision(seen), contract_decision(sent)
    if vrl != contract and u64_read_as_text(seen, sent, contract):
        return "u64 read as text"
    if vrl[0] == "refused" and contract[0] == "stored" and beyond_vrl(sent):
        return "payload beyond serde_json"
    if vrl[0] == contract[0] == "stored" and numbers_read_apart(seen, sent) \
            and comparable(vrl[1], sent) != comparable(contract[1], sent):
        return "number read apart"
    assert vrl[0] == contract[0], (sent, vrl, contract)
    if vrl[0] == "stored":
        assert comparable(vrl[1], sent) == comparable(contract[1], sent), sent
    else:  # the same field, unless VRL stopped earlier at a payload it cannot read
        assert vrl[1] == contract[1] or (vrl[1] == "payload" and beyond_vrl(sent)), (sent, vrl, contract)
    return vrl[0]


def body_decisions(body: bytes) -> list[str]:
    """Vector's decision per event of one body; a body Vector's source refuses must be one
    the embedded ingest refuses too (nothing was acknowledged either way)."""
    try:
        events = vector_events(body)
    except Refused:
        try:
            parsed = json.loads(body.decode("utf-8"))  # serve refuses bytes that are not UTF-8
            originals = parsed if isinstance(parsed, list) else [parsed]
            assert any(contract_decision(e)[0] == "refused" if isinstance(e, dict) else True for e in originals), body[:300]
        except (ValueError, RecursionError, UnicodeDecodeError):
            pass  # the embedded ingest refuses a body that is not JSON
        return ["body refused"]
    sent = json.loads(body.decode("utf-8"))
    return [same_decision(seen, original) for seen, original in zip(events, sent if isinstance(sent, list) else [sent])]


# --- generated events: every field drawn from valid and invalid shapes

NOW = int(time.time())
RETENTION_S = SPEC["clickhouse"]["retention_days"] * 86400
SCOPES = sorted(SPEC["events"]["scopes"]["server"]) + sorted(SPEC["events"]["scopes"]["client"])


def away_from_bounds(seconds: float) -> bool:
    """Not within a minute of a time bound: the two programs read the clock at different moments."""
    bounds = (946684800, NOW + 86400, NOW - RETENTION_S)
    return all(abs(seconds - b) > 60 for b in bounds)


epoch_seconds = st.one_of(st.integers(NOW - RETENTION_S + 120, NOW + 86400 - 120),
                          st.integers(946684800 - 10**6, NOW + 3 * 86400)).filter(away_from_bounds)
fraction = st.text("0123456789", min_size=1, max_size=9)
spaces = st.sampled_from(["", " ", "\t", "\u2003", "\x1c", "\n "])


@st.composite
def timestamps(draw):
    seconds = draw(epoch_seconds)
    kind = draw(st.sampled_from(["epoch text", "epoch text", "epoch int", "epoch float", "iso", "iso", "junk"]))
    if kind == "epoch text":
        text = str(seconds) + (("." + draw(fraction)) if draw(st.booleans()) else "")
        return draw(spaces) + ("0" * draw(st.integers(0, 3))) + text + draw(spaces)
    if kind == "epoch int":
        return seconds
    if kind == "epoch float":
        return seconds + draw(st.floats(0, 1, exclude_max=True))
    if kind == "iso":
        moment = time.gmtime(seconds)
        zone = draw(st.sampled_from(["Z", "z", "", "+00:00", "+0530", "-03", "+05:30", "-23:59", "+24:00", "+05:60"]))
        offset = 0
        if zone not in ("Z", "z", ""):
            digits = zone[1:].replace(":", "")
            offset = (int(digits[:2]) * 3600 + int(digits[2:] or 0) * 60) * (1 if zone[0] == "+" else -1)
            assume(away_from_bounds(seconds - offset))
        text = time.strftime("%Y-%m-%d" + draw(st.sampled_from(["T", " "])) + "%H:%M", moment)
        if draw(st.booleans()):
            text += time.strftime(":%S", moment)
            if draw(st.booleans()):
                text += draw(st.sampled_from([".", ","])) + draw(fraction)
        return draw(spaces) + text + draw(st.sampled_from(["", " "])) + zone
    return draw(st.one_of(st.just("2024-02-30T00:00:00Z"), st.just("2024-01-01T00:00:60Z"), st.just("2024-01-01T24:00:00Z"),
                          st.text(max_size=12), st.booleans(), st.none(), st.lists(st.integers(), max_size=1),
                          st.integers(NOW * 1000, NOW * 1000 + 10**6).map(str), st.floats(allow_nan=False, allow_infinity=False)))


def integers(maximum: int):
    return st.one_of(st.none(), st.integers(0, maximum), st.integers(0, U64_MAX), st.integers(-(2**64), -1),
                     st.integers(0, maximum).map(float), st.floats(0, 2e19), st.integers(0, U64_MAX).map(str),
                     st.integers(0, maximum).map(lambda n: "0" * (n % 3) + str(n)), st.booleans(),
                     st.sampled_from(["", " 1", "1.0", "-1", "0x1", "１２", "123456789012345678901"]))


def scalars():
    return st.one_of(st.none(), st.text(max_size=8), st.booleans(), st.integers(-(2**70), 2**70),
                     st.floats(allow_nan=False, allow_infinity=False), st.lists(st.integers(), max_size=1))


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.text(max_size=5),
                                     st.floats(allow_nan=False, allow_infinity=False)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                           max_leaves=8)
payloads = st.one_of(st.none(), json_values.map(json.dumps), st.dictionaries(st.text(max_size=3), json_values, max_size=3),
                     st.lists(json_values, max_size=3), st.text(max_size=8), st.integers(), st.booleans(),
                     st.sampled_from(["NaN", '{"a": Infinity}', '"\\ud800"', "1e400", "[" * 130 + "]" * 130, " {} "]))


def valid_or_not(draw, valid, invalid):
    """Mostly a valid value (so that whole events are often valid), one time in 15 any shape."""
    return draw(invalid) if draw(st.integers(0, 14)) == 0 else draw(valid)


@st.composite
def events(draw):
    event = {}
    for column in SPEC["events"]["columns"]:
        name, kind = column["name"], column["type"]
        if name not in ("scope", "timestamp") and draw(st.integers(0, 3)) == 0:  # sometimes absent
            continue
        if name == "scope":
            event[name] = valid_or_not(draw, st.sampled_from(SCOPES), st.one_of(st.sampled_from(["", "nope:x"]), st.none(), st.integers()))
        elif name == "source":
            event[name] = valid_or_not(draw, st.sampled_from(["server", "client", "", "other"]), st.one_of(st.none(), st.integers()))
        elif name == "timestamp":
            event[name] = draw(timestamps())
        elif name == "payload":
            event[name] = draw(payloads)
        elif name == "obj_val":
            event[name] = draw(scalars())
        elif "UInt" in kind:
            maximum = {"UInt16": 2**16 - 1, "UInt32": 2**32 - 1}.get(re.sub(r"\W|Nullable", "", kind), U64_MAX)
            event[name] = valid_or_not(draw, st.one_of(st.none(), st.integers(0, maximum)), integers(maximum))
        else:
            event[name] = valid_or_not(draw, st.one_of(st.text(max_size=8), st.none()), st.one_of(st.integers(), st.booleans()))
    if "timestamp" in event and draw(st.integers(0, 29)) == 0:
        del event["timestamp"]
    if draw(st.booleans()):
        event["unknown_field"] = draw(scalars())
    return event


def SETTINGS(examples: int):
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


def test_the_rendered_program_decides_every_generated_event_as_the_embedded_contract(capsys):
    seen = []
    # ~12 ms each (the program in VRL, and the contract). At least 300: 4-9% of draws are
    # stored, and fewer draws could draw none
    n = max(examples(1500), 300)

    @SETTINGS(n)
    @given(events())
    def check(event):
        seen.extend(body_decisions(json.dumps([event]).encode()))

    check()
    counts = {k: seen.count(k) for k in sorted(set(seen))}
    # Not vacuous either way. How many are stored varies with hypothesis' draws (55-134 of 1,500
    # seen): each of 18 fields may be drawn invalid, and hypothesis favours the invalid branch's 0.
    assert counts.get("stored", 0) > 0 and counts.get("refused", 0) > n / 15, counts
    with capsys.disabled():
        print(f"\n[vrl] generated events: {counts}")


def test_the_rendered_program_decides_the_fuzz_corpus_as_the_embedded_contract(capsys):
    seen = []

    n = examples(800)

    @SETTINGS(n)
    @given(st.one_of(one_bad_event(SPEC), not_events(), not_json()))
    def check(case):
        seen.extend(body_decisions(case[1]))

    check()
    counts = {k: seen.count(k) for k in sorted(set(seen))}
    assert counts.get("refused", 0) > n / 4 and counts.get("stored", 0) > n / 4, counts
    with capsys.disabled():
        print(f"\n[vrl] fuzz corpus: {counts}")


@pytest.mark.parametrize("event, field", [
    ({"scope": "update:task", "source": "server", "count": 65536}, "count"),
    ({"scope": "update:task", "source": "server", "timestamp": "not a time"}, "timestamp"),
    ({"scope": "update:task", "source": "server", "timestamp": "2024-02-30T00:00:00Z"}, "timestamp"),
    ({"scope": "update:task", "source": "server", "job_id": "12a"}, "job_id"),
    ({"scope": "update:task", "source": "server"}, "timestamp"),  # missing: Vector's receipt time is not taken
    ({"scope": "updat:task", "source": "server"}, "scope"),
    ({"scope": "update:task", "source": "server", "payload": "{"}, "payload"),
])
def test_what_clickhouse_would_refuse_is_refused_naming_the_field(event, field):
    event = {"timestamp": f"{NOW}.5", **event} if field != "timestamp" or "timestamp" in event else event
    assert vrl_decision(event) == ("refused", field) == contract_decision(event)


def test_cvats_timestamps_are_stored_to_the_millisecond_as_the_embedded_contract_does():
    for stamp in (f"{NOW}.123456", f"{NOW}", NOW, NOW + 0.5,
                  time.strftime("%Y-%m-%dT%H:%M:%S.987654Z", time.gmtime(NOW)),
                  time.strftime("%Y-%m-%d %H:%M:%S+02:00", time.gmtime(NOW + 7200))):
        event = {"scope": "change:frame", "source": "client", "timestamp": stamp}
        assert vrl_decision(event)[1]["timestamp"] == contract_decision(event)[1]["timestamp"], stamp


def test_the_program_calls_only_functions_vector_054_has():
    code = "\n".join(line.split("#")[0] for line in PROGRAM.splitlines() if not line.lstrip().startswith("#"))
    called = set(re.findall(r"\b([a-z_][a-z0-9_]*)!?\(", code)) - {"if"}
    assert called <= VRL_0_31, called - VRL_0_31
    assert "abort" in code and "parse_timestamp" in called


# --- stored through ClickHouse with the settings of Vector's ClickHouse sink

VECTOR_SINK_SETTINGS = {"input_format_import_nested_json": 1, "input_format_skip_unknown_fields": 1,
                        "date_time_input_format": "best_effort", "async_insert": 0}


@pytest.mark.clickhouse
def test_rows_the_program_keeps_are_stored_by_clickhouse_as_the_embedded_ingest_stores_them(store):
    from cvat_analytics.store import insert_json_rows

    kept = []

    @SETTINGS(400)
    @given(events())
    def collect(event):
        [seen] = vector_events(json.dumps([event]).encode())
        if vrl_decision(seen)[0] == contract_decision(event)[0] == "stored" and not numbers_read_apart(seen, event):
            kept.append((seen, event))

    collect()
    edges = cvat_batch("stored", 5) + [{"scope": "update:task", "source": "server", "timestamp": f"{NOW}.9999",
                                        "obj_id": U64_MAX, "job_id": str(U64_MAX), "task_id": 2.0**63, "count": 65535,
                                        "duration": 2**32 - 1, "obj_val": 1e22}]
    kept += [(seen, e) for seen, e in zip(vector_events(json.dumps(edges).encode()), edges)]
    db = store.database
    vrl_body = b"".join(json.dumps(vrl_decision(seen)[1]).encode() + b"\n" for seen, _ in kept)
    # What Vector sends: the program's rows, JSONEachRow, with the sink's URL settings.
    store.client.raw_insert(f"`{db}`.events", None, vrl_body, settings=VECTOR_SINK_SETTINGS, fmt="JSONEachRow")
    columns = ", ".join(f"toJSONString({c['name']})" for c in SPEC["events"]["columns"] if c["name"] != "payload")
    via_vector = sorted(store.client.query(f"SELECT {columns} FROM `{db}`.events").result_rows, key=repr)
    store.client.command(f"TRUNCATE TABLE `{db}`.events")
    insert_json_rows(store.client, db, b"".join(CONTRACT.to_line(contract_decision(e)[1]) for _, e in kept))
    via_serve = sorted(store.client.query(f"SELECT {columns} FROM `{db}`.events").result_rows, key=repr)
    assert len(via_vector) == len(kept) > 10  # 6 edge rows and some drawn ones (15-35 seen)
    assert via_vector == via_serve


# --- the wiring, in both renders

def downstream(config: dict, start: str) -> set[str]:
    """Every component reached from `start` (inputs name components, or component.output)."""
    components = {**config.get("transforms", {}), **config.get("sinks", {})}
    reached, frontier = set(), {start}
    while frontier:
        frontier = {name for name, c in components.items() if name not in reached
                    and any(i.split(".")[0] in frontier for i in c.get("inputs", []))} - reached
        reached |= frontier
    return reached


@pytest.mark.parametrize("path", RENDERS)
def test_events_reach_clickhouse_only_through_the_contract_and_refusals_reach_the_dead_letter_file(path):
    config = CONFIGS[path]
    transforms, sinks = config["transforms"], config["sinks"]
    contract = transforms["cvat_contract"]
    assert contract["type"] == "remap" and contract["inputs"] == ["cvat_events"]
    assert contract["drop_on_error"] is contract["drop_on_abort"] is contract["reroute_dropped"] is True
    assert contract["source"] == PROGRAM
    assert config["sources"]["cvat_events"]["decoding"] == {"codec": "json", "json": {"lossy": False}}
    # The events sink reads only the contract's kept events; its buffer is behind the contract.
    assert sinks["clickhouse"]["inputs"] == ["cvat_contract"] and sinks["clickhouse"]["buffer"]["type"] == "disk"
    assert downstream(config, "cvat_events") & set(sinks) == {"clickhouse", "dead_letters"}
    # Refused events: the remap's `dropped` output -> the timestamp restore -> the file sink.
    assert transforms["dead_letter_events"]["inputs"] == ["cvat_contract.dropped"]
    dead = sinks["dead_letters"]
    assert dead["type"] == "file" and dead["inputs"] == ["dead_letter_events"]
    assert dead["path"].startswith("/var/lib/vector-dead-letters/") and dead["encoding"] == {"codec": "json"}
    assert dead["framing"] == {"method": "newline_delimited"} and dead["acknowledgements"] == {"enabled": True}
    # Vector's own metrics: internal_metrics -> metric_to_log -> rows -> the vector_metrics table.
    assert config["sources"]["vector_metrics"]["type"] == "internal_metrics"
    assert transforms["vector_metrics_logs"] == {"type": "metric_to_log", "inputs": ["vector_metrics"]}
    assert transforms["vector_metrics_rows"]["inputs"] == ["vector_metrics_logs"]
    assert downstream(config, "vector_metrics") & set(sinks) == {"clickhouse_metrics"}
    assert sinks["clickhouse_metrics"]["table"] == "vector_metrics"
    assert sinks["clickhouse_metrics"]["auth"] == sinks["clickhouse"]["auth"]
    assert vector_problems(config) == []


def test_the_dead_letter_volume_is_mounted_where_the_file_sink_writes():
    files = render_all(SPEC)
    standalone = safe_load(files["docker-compose.yml"])
    assert "vector-dead-letters:/var/lib/vector-dead-letters" in standalone["services"]["vector"]["volumes"]
    assert "vector-dead-letters" in standalone["volumes"]
    override = files["cvat-compose.override.yml"]
    assert "- cvat_analytics_vector_dead_letters:/var/lib/vector-dead-letters" in override
    assert "\n  cvat_analytics_vector_dead_letters:\n" in override


def test_the_ingest_user_may_insert_vector_metrics():
    users = render_all(SPEC)["clickhouse/users.d/cvat-users.xml"]
    assert "<query>GRANT INSERT ON `cvat`.`vector_metrics`</query>" in users


def test_the_metrics_program_keeps_the_series_the_panel_reads():
    program = CONFIGS["vector/vector.yaml"]["transforms"]["vector_metrics_rows"]["source"]
    metric = {"name": "component_discarded_events_total", "namespace": "vector", "kind": "absolute",
              "tags": {"component_id": "clickhouse", "intentional": "false", "host": "abc"},
              "counter": {"value": 120.0}}
    row = RUNTIME.execute(".timestamp = now()\n" + program, metric).processed_event
    assert {k: row[k] for k in ("host", "name", "component_id", "value")} == {
        "host": "abc", "name": "component_discarded_events_total", "component_id": "clickhouse", "value": 120.0}
    with pytest.raises(RuntimeError):
        RUNTIME.execute(".timestamp = now()\n" + program, dict(metric, name="component_sent_bytes_total"))


# --- a dead-letter file, re-imported once the cause is fixed

@pytest.mark.clickhouse
def test_a_dead_letter_file_is_imported_as_is_once_the_cause_is_fixed(store, tmp_path):
    """A new CVAT scope the spec does not list yet: refused to the dead-letter file; added to
    analytics.yaml, `cvat-analytics import FILE` stores it. An event Vector dated on arrival
    (no timestamp) stays refused."""
    new = {"scope": "create:widget", "source": "server", "timestamp": f"{NOW}.25", "user_id": 7}
    undated = {"scope": "update:task", "source": "server", "user_id": 8}
    lines = []
    for event in (new, undated):
        decision = vrl_decision(vector_events(json.dumps([event]).encode())[0])
        assert decision[0] == "refused"
        # As the file sink writes it: the original event (Vector's fields, minus the receipt
        # time dead_letter_events removes) and metadata.dropped.
        record = dict(event, source_type="http_server", path="/",
                      metadata={"dropped": {"reason": "abort", "message": decision[1], "component_id": "cvat_contract",
                                            "component_type": "remap", "component_kind": "transform"}})
        lines.append(json.dumps(record))
    dead = tmp_path / "events-2026-12-06.ndjson"
    dead.write_text("\n".join(lines) + "\n")

    # `cvat-analytics import` (cmd_import runs run_import on the store): in-process, as chdb
    # opens a data path in one process at a time.
    fixed = dict(store.spec, events=dict(store.spec["events"], scopes=dict(
        store.spec["events"]["scopes"], server=[*store.spec["events"]["scopes"]["server"], "create:widget"])))
    before = store.client.query(f"SELECT count() FROM `{store.database}`.events").result_rows[0][0]
    err = io.StringIO()
    assert run_import(store.client, store.spec, str(dead), err=err) == 1  # the cause not fixed yet
    assert run_import(store.client, fixed, str(dead), err=err) == 1  # all or nothing: line 2 has no timestamp
    assert "line 2" in err.getvalue() and "timestamp" in err.getvalue(), err.getvalue()
    assert run_import(store.client, fixed, str(dead), skip_invalid=True, err=err) == 0
    rows = store.client.query(f"SELECT scope, user_id FROM `{store.database}`.events").result_rows
    assert before == 0 and rows == [("create:widget", 7)]


def test_cvats_client_address_is_kept_as_the_embedded_contract_keeps_it():
    # CVAT 2.66+ sends remote_addr (migration 0015); a program that built its row from the
    # spec's columns alone dropped it before the sink.
    event = {"scope": "create:job", "source": "server", "timestamp": f"{NOW}.5", "remote_addr": "10.1.2.3"}
    assert vrl_decision(event)[1]["remote_addr"] == "10.1.2.3"
    assert contract_decision(event)[1]["remote_addr"] == "10.1.2.3"
    for older in ({k: v for k, v in event.items() if k != "remote_addr"}, {**event, "remote_addr": None}):
        assert vrl_decision(older)[1]["remote_addr"] is None
    assert vrl_decision({**event, "remote_addr": 7})[1] == "remote_addr"


def test_vectors_metrics_are_scraped_as_often_as_the_spec_says_in_both_renders():
    import copy
    spec = copy.deepcopy(SPEC)
    spec["vector"]["metrics"]["scrape_interval_secs"] = 37
    for path, text in render_all(spec).items():
        if path in RENDERS:
            assert safe_load(text)["sources"]["vector_metrics"]["scrape_interval_secs"] == 37, path
