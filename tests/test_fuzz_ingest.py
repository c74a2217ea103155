"""Bad input cannot hurt: thousands of invalid bodies over a real socket.

Every one gets a 4xx whose message names the problem (and the event index and field
when one event is at fault); the service stays up; nothing from those requests is
stored. The number of bodies tried, per kind, is printed with the test output.
"""
from __future__ import annotations

import collections
import http.client
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_serve import count, cvat_batch, post, request
from tests.examples_budget import examples

pytestmark = pytest.mark.clickhouse

MAX_BODY = 64 * 1024
NOW = int(time.time())
IDS = ("obj_id", "project_id", "task_id", "job_id", "user_id", "org_id", "access_token_id")
STRINGS = ("obj_name", "user_name", "user_email", "org_slug")

not_a_number = st.one_of(st.booleans(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                         st.text(min_size=1, max_size=12).filter(lambda s: not s.strip().isdigit() or not s.isascii()))
negative = st.integers(max_value=-1)


def bad_values(field: str, spec: dict):
    """Values `field` must refuse, and the word the error message must contain."""
    if field in IDS:
        return st.one_of(
            st.tuples(negative, st.just("expected an integer")),
            st.tuples(st.integers(min_value=2**64), st.just("expected an integer")),
            st.tuples(st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: not f.is_integer()),
                      st.just("expected an integer")),
            st.tuples(not_a_number, st.just("expected an integer")))
    if field == "count":
        return st.tuples(st.one_of(st.integers(min_value=2**16), negative, not_a_number), st.just("expected an integer"))
    if field == "duration":
        return st.tuples(st.one_of(st.integers(min_value=2**32), negative, not_a_number), st.just("expected an integer"))
    if field == "timestamp":
        retention = spec["clickhouse"]["retention_days"]
        return st.one_of(
            st.tuples(st.text(min_size=1, max_size=20).map(lambda s: "x" + s), st.just("expected epoch seconds")),
            st.tuples(st.integers(0, 946684799).map(str), st.just("between 2000-01-01")),  # before 2000
            st.tuples(st.integers(NOW + 2 * 86400, NOW + 10**9), st.just("one day from now")),
            st.tuples(st.integers(NOW * 1000, NOW * 1000 + 10**6).map(str), st.just("epoch milliseconds")),
            st.tuples(st.integers(946684800, NOW - (retention + 1) * 86400).map(lambda t: f"{t}.5"),
                      st.just("older than clickhouse.retention_days")),
            st.tuples(st.sampled_from(["2024-02-30T00:00:00Z", "2024-13-01T00:00:00Z", "2024-01-01T25:00:00Z"]),
                      st.just("a real date and time")),
            st.tuples(st.one_of(st.booleans(), st.lists(st.integers(), max_size=2)), st.just("expected epoch seconds")))
    if field == "scope":
        listed = set(spec["events"]["scopes"]["server"])
        return st.one_of(
            st.tuples(st.from_regex(r"[a-z_]{1,10}:[a-z_]{1,10}", fullmatch=True).filter(lambda s: s not in listed),
                      st.just("is not a server scope")),
            st.tuples(st.just(""), st.just("non-empty")),
            st.tuples(st.one_of(st.integers(), st.booleans(), st.lists(st.text(), max_size=2)), st.just("expected a string")))
    if field == "payload":
        return st.tuples(st.one_of(st.text(min_size=1).map(lambda s: "{" + s), st.integers(), st.booleans()),
                         st.just("expected a JSON"))
    return st.tuples(st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), max_size=2), st.just("\ud800")),
                     st.just("expected"))


@st.composite
def one_bad_event(draw, spec):
    """A valid batch with one event broken in one field: 400 naming that index and field."""
    events = cvat_batch("fuzz", draw(st.integers(1, 6)))
    index = draw(st.integers(0, len(events) - 1))
    field = draw(st.sampled_from(IDS + STRINGS + ("count", "duration", "timestamp", "scope", "payload")))
    value, words = draw(bad_values(field, spec))
    events[index][field] = value
    try:
        body = json.dumps(events, ensure_ascii=draw(st.booleans())).encode()
    except UnicodeEncodeError:  # a lone surrogate travels as a \ud800 escape
        body = json.dumps(events).encode()
    return "one bad field", body, 400, index, field, words


@st.composite
def not_events(draw):
    """A JSON array with something other than an event object, or a required field missing."""
    events = cvat_batch("fuzz", draw(st.integers(1, 4)))
    index = draw(st.integers(0, len(events) - 1))
    if draw(st.booleans()):
        events[index] = draw(st.one_of(st.integers(), st.text(), st.lists(st.integers(), max_size=3), st.none()))
        return "not an object", json.dumps(events).encode(), 400, index, None, "expected a JSON object"
    field = draw(st.sampled_from(["scope", "timestamp"]))
    del events[index][field]
    return "missing field", json.dumps(events).encode(), 400, index, field, "required"


@st.composite
def not_json(draw):
    kind = draw(st.sampled_from(["text", "bytes", "invalid utf-8", "truncated", "deep"]))
    if kind == "text":
        body = ("<" + draw(st.text())).encode()
        words = "not valid JSON"
    elif kind == "bytes":
        body = b"[" + draw(st.binary(min_size=1))
        words = ""  # not UTF-8, or not JSON, or a bad event: any 400 naming it
    elif kind == "invalid utf-8":
        good = json.dumps(cvat_batch("fuzz", 2)).encode()
        cut = draw(st.integers(1, len(good) - 1))
        body = good[:cut] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])) + good[cut:]
        words = "not UTF-8"
    elif kind == "truncated":
        good = json.dumps(cvat_batch("fuzz", 3)).encode()
        body = good[: draw(st.integers(1, len(good) - 1))]
        words = ""
    else:
        depth = draw(st.integers(3_000, 10_000))  # the 100k-deep bodies: see the test below
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        body = (opener * depth + "1" + closer * depth).encode()
        words = "nested too deeply"
    return kind, body, 400, None, None, words


@st.composite
def oversize(draw):
    size = draw(st.integers(MAX_BODY + 1, 3 * MAX_BODY))
    return "over the size limit", b"[" + b" " * (size - 2) + b"]", 413, None, None, f"at most {MAX_BODY}"


@pytest.fixture
def fuzz_server(store, make_served):
    # A small size limit: oversize bodies stay cheap to send.
    return make_served({**store.spec, "embedded": {**store.spec["embedded"], "max_body_bytes": MAX_BODY}})


def send(srv, body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    try:
        conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.slow
def test_thousands_of_invalid_bodies_get_a_4xx_naming_the_problem_and_store_nothing(fuzz_server, store, capsys):
    tried = collections.Counter()

    @settings(max_examples=examples(2000), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.one_of(one_bad_event(store.spec), not_events(), not_json(), oversize()))
    def check(case):
        kind, body, status, index, field, words = case
        tried[kind] += 1
        got, answer = send(fuzz_server, body)
        assert 400 <= got < 500, (kind, got, answer, body[:200])
        assert got == status or kind == "bytes", (kind, got, answer, body[:200])
        assert answer["error"] and words in answer["error"], (kind, answer, body[:200])
        if index is not None:
            assert answer["index"] == index and answer.get("field") == field, (answer, body[:300])
            prefix = f"index {index}: {field}: " if field else f"index {index}: "
            assert answer["error"].startswith(prefix), answer

    check()
    assert count(store) == 0
    assert request(fuzz_server, "GET", "/health")[0] == 200
    assert post(fuzz_server, cvat_batch("after", 2)) == (200, {"stored": 2})
    with capsys.disabled():
        print(f"\n[fuzz] {sum(tried.values())} invalid bodies tried, every one a 4xx, none stored: "
              + ", ".join(f"{k} {n}" for k, n in sorted(tried.items())))


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b'[{"scope":"create:task","timestamp":"2026-01-01T00:00:00Z","payload":' + b"[" * 100_000 + b"]" * 100_000 + b"}]",
    b'{"scope":"create:task"}\n' + b"[" * 100_000 + b"]" * 100_000,  # NDJSON
], ids=["array", "object", "payload", "ndjson"])
def test_100k_deep_nesting_is_a_400_not_a_crash(server, store, body):
    status, answer = post(server, body)
    assert status == 400 and "nested too deeply" in answer["error"], answer
    assert request(server, "GET", "/health")[0] == 200 and count(store) == 0


def test_a_deeply_nested_payload_string_names_its_event(server, store):
    events = cvat_batch("deep", 2)
    events[1]["payload"] = "[" * 100_000 + "]" * 100_000
    status, answer = post(server, events)
    assert status == 400 and answer["index"] == 1 and answer["field"] == "payload"
    assert "nested too deeply" in answer["error"]
