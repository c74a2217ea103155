"""The typed hot path (events_fast, through ingest.BodyDecoder) against the reference
(parse_events + EventContract.normalize): the same bodies give the same rows, the
same accept/refuse decision, and the same error index, field and message."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cvat_analytics.events import EventContract
from cvat_analytics.events_fast import FastRows, UseReference
from cvat_analytics.service.ingest import BadBody, BodyDecoder, WrongOwner
from cvat_analytics_generator.spec import load_spec
from tests.test_events import NOW, field_names, json_junk, valid_events
from tests.test_fuzz_ingest import not_events, not_json, one_bad_event
from tests.test_serve import cvat_batch
from tests.examples_budget import examples

SPEC = load_spec()
DECODER = BodyDecoder(EventContract(SPEC))


def outcome(decode, body: bytes):
    try:
        rows, lines = decode(body)
    except BadBody as exc:
        return ("refused", str(exc), exc.index, exc.field)
    except WrongOwner as exc:
        return ("forbidden", str(exc), exc.index, exc.field)
    return ("stored", rows, lines)


def same(body: bytes, forced: dict | None = None) -> tuple:
    """Both paths, also under an ingest token's forced filter (applied the same way to either)."""
    def reference(body: bytes):
        rows = DECODER.reference_rows(body)
        return rows, DECODER.encode(rows, forced, "t")

    fast, slow = outcome(lambda b: DECODER.decode(b, forced, "t"), body), outcome(reference, body)
    assert fast == slow, (body[:300], fast, slow)
    return fast


def dumps(value, ascii_only: bool) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:  # a lone surrogate travels as an escape
        return json.dumps(value).encode()


recent = (NOW - 300 * 86400) * 1000  # inside the default spec's retention
odd_values = st.one_of(
    json_junk, st.integers(-5, 2**64 + 5).map(str), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["\ud800", "NaN", '{"a": NaN}', "[Infinity]", "1e400", " 1700000000.5", "1700000000.",
                     f"{NOW}.999999", f"{NOW + 3 * 86400}", "[" * 300 + "]" * 300, 2**64 - 1, 2**64, 42.0, True]))


@st.composite
def bodies(draw):
    kind = draw(st.sampled_from(["valid", "one odd field", "junk events", "fuzz"]))
    if kind == "valid":
        events = [e for e, _ms, _expected in draw(st.lists(valid_events(earliest_ms=recent), min_size=1, max_size=6))]
    elif kind == "one odd field":
        events = [e for e, _ms, _expected in draw(st.lists(valid_events(earliest_ms=recent), min_size=1, max_size=4))]
        index = draw(st.integers(0, len(events) - 1))
        events[index][draw(field_names)] = draw(odd_values)
    elif kind == "junk events":
        events = draw(st.lists(st.one_of(json_junk, st.dictionaries(field_names, json_junk)), max_size=4))
    else:
        return draw(st.one_of(one_bad_event(SPEC), not_events(), not_json()))[1]
    body = dumps(events, draw(st.booleans()))
    shape = draw(st.sampled_from(["array", "array", "object", "ndjson", "bom"]))
    if shape == "object" and len(events) == 1:
        return dumps(events[0], True)
    if shape == "ndjson":
        return b"\n".join(dumps(e, True) for e in events)
    if shape == "bom":
        return "\ufeff".encode() + body
    return body


@pytest.mark.slow
@settings(max_examples=examples(3000), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(bodies())
@example(b'[{"scope":"create:task","source":"server","timestamp":"1999-12-31T23:59:59Z"}]')
@example(b'[{"scope":"create:task","source":"server","timestamp":"%d.5","payload":{"a":NaN}}]' % NOW)
@example(b'[{"scope":"create:task","source":"server","timestamp":"%d.5","user_name":"\\ud800"}]' % NOW)
def test_the_fast_path_and_the_reference_agree(body):
    same(body)
    same(body, {"org_id": 1})


def test_cvat_bodies_take_the_fast_path():
    """The property above holds trivially if the fast path gives up on everything: it must not."""
    body = json.dumps(cvat_batch("fast", 50)).encode()
    rows = FastRows(DECODER.contract).rows(body)
    assert len(rows) == 50 and same(body)[1] == rows
    for shape in (b'{"scope":"create:task","timestamp":"1700000000"}', b'[{"scope":"x"}]', b'[1]'):
        try:
            FastRows(DECODER.contract).rows(shape)
        except UseReference:
            continue
        raise AssertionError(f"{shape!r} is not a body the fast path takes")
