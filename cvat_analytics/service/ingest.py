"""POST /: the events CVAT's server sends to Vector's http_server, taken here directly.

The body is a JSON array of events; also one object, or NDJSON. A request is all or
nothing: every event is validated first (events_fast, with events.EventContract as
the reference), in the request's own thread; a bad request is refused here and never
reaches the engine. A valid one is handed to group commit (group_commit.py), which
stores it with the requests that arrived with it, once however often it is retried,
and the answer says which: {"stored": n}, or {"stored": 0, "duplicate": true}.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING

import msgspec

from ..errors import first_line
from ..events import EventContract, EventError
from ..events_fast import FastRows, UseReference
from .group_commit import MAX_WAITING_EVENTS, EngineRefused, GroupCommit, redo_path
from .http import BodyError
from .responses import Response, json_response

if TYPE_CHECKING:
    from .http import RequestHandler

# Content types a JSON body may come with; none at all is accepted too (Vector does not look).
# curl --data sends application/x-www-form-urlencoded with the body as given: a JSON body
# posted that way is taken, as Vector's http_server takes it.
JSON_TYPES = ("application/json", "application/x-ndjson", "application/ndjson",
              "application/jsonlines", "application/x-jsonlines", "text/plain",
              "application/x-www-form-urlencoded")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces
RETRY_AFTER_S = "1"


class BadBody(Exception):
    """The body is not JSON events; `index` says which event when one is at fault."""

    def __init__(self, message: str, index: int | None = None, field: str | None = None):
        super().__init__(message)
        self.index = index
        self.field = field


def parse_events(body: bytes) -> list:
    """A JSON array, a single JSON value, or NDJSON -> the list of incoming events."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadBody(f"the body is not UTF-8 text ({exc.reason})") from None
    stripped = text.strip()
    if not stripped:
        raise BadBody("the body is empty; expected a JSON array of events")
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as exc:
        if stripped[0] != "{":
            raise BadBody(f"the body is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
        return _parse_ndjson(stripped)
    except (RecursionError, ValueError) as exc:  # nesting deeper than the parser's stack; a 5000-digit number
        raise BadBody(f"the body is not acceptable JSON: {_json_limit(exc)}") from None
    return value if isinstance(value, list) else [value]


def _json_limit(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "it is nested too deeply (events are flat objects)"
    return first_line(exc)


def _parse_ndjson(text: str) -> list:
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise BadBody(f"line {number} is not valid JSON: {exc.msg}", index=len(events)) from None
        except (RecursionError, ValueError) as exc:
            raise BadBody(f"line {number} is not acceptable JSON: {_json_limit(exc)}", index=len(events)) from None
    return events


def dedup_token(request: "RequestHandler", body: bytes) -> str:
    """What makes this request the same as its retries (its deduplication key, before hashing).

    With an `Idempotency-Key` header: the key, namespaced by the caller, so any body
    sent with the same key is stored once (the first one). Without: the body's
    sha256, so a byte-identical retry is stored once. The two never collide.
    Ingest hashes it to the 32-hex key group commit looks up in <db>.ingest_requests; the
    group's INSERT carries "ingest <key> <key> ..." as ClickHouse's insert_deduplication_token,
    from which migration 0011's view records the keys (group_commit.py)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return "body:" + hashlib.sha256(body).hexdigest()
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadBody("Idempotency-Key: expected 1-200 printable ASCII characters without spaces")
    return f"key:{request.principal.name}:{key}"


# What a token with forced filters sends but cannot vouch for: stored as NULL (encode).
UNVOUCHED_LABELS = ("org_slug", "user_name", "user_email")


class WrongOwner(Exception):
    """An event names another org or user than the token's forced filter allows (403)."""

    def __init__(self, message: str, index: int, field: str):
        super().__init__(message)
        self.index, self.field = index, field


class BodyDecoder:
    """A body -> its rows (lists in column order) and the JSONCompactEachRow lines to insert.

    The fast path (events_fast) first; any body it does not take goes through the
    reference (parse_events + EventContract.normalize), which also words every refusal."""

    def __init__(self, contract: EventContract):
        self.contract = contract
        self.fast = FastRows(contract)
        self.columns = self.fast.names

    def decode(self, body: bytes, forced: dict | None = None, who: str = "") -> tuple[list[list], bytes]:
        """BadBody (400) at the first fault; WrongOwner (403) when `forced` filters refuse an event."""
        try:
            rows = self.fast.rows(body)
            return rows, self.encode(rows, forced, who)
        except (UseReference, UnicodeEncodeError):  # encode: a lone surrogate, which the reference refuses
            rows = self.reference_rows(body)
            return rows, self.encode(rows, forced, who)

    def reference_rows(self, body: bytes) -> list[list]:
        rows = []
        for index, event in enumerate(parse_events(body)):
            try:
                rows.append(list(self.contract.normalize(event, index).values()))
            except EventError as exc:
                raise BadBody(str(exc), index=exc.index, field=exc.field) from None
            except RecursionError:  # a value nested just below the parser's limit
                raise BadBody(f"index {index}: it is nested too deeply (events are flat objects)", index=index) from None
        return rows

    def encode(self, rows: list[list], forced: dict | None, who: str) -> bytes:
        """A token forced to org 8 writes org 8's events only: a missing id is set to the
        forced one, another id is refused (nothing of the request is stored). Its rows keep
        no org_slug, user_name or user_email: the token cannot vouch for them, and the
        dashboards name users and pick them by name across organisations (anyLast(user_name))."""
        if forced:
            for column in UNVOUCHED_LABELS:
                if column in self.columns:
                    at = self.columns.index(column)
                    for row in rows:
                        row[at] = None
        refused = None
        for key, value in (forced or {}).items():
            if key not in self.columns:
                continue
            at = self.columns.index(key)
            for index, row in enumerate(rows):
                if row[at] is None:
                    row[at] = value
                elif row[at] != value and (refused is None or index < refused.index):
                    refused = WrongOwner(f"index {index}: {key}: token {who!r} may only write events with "
                                         f"{key}={value}, got {row[at]}", index, key)
        lines = b"".join(msgspec.json.encode(row) + b"\n" for row in rows)
        if refused is not None:  # after encoding: a 400 the reference finds comes first on both paths
            raise refused
        return lines


class Ingest:
    """The POST / handler: validate every event, then store them with the group they arrived in."""

    def __init__(self, client, spec: dict, dsn: str = ""):
        self.database = spec["clickhouse"]["database"]
        self.decoder = BodyDecoder(EventContract(spec))
        self.commits = GroupCommit(client, spec, self.decoder.columns, redo_path(spec, dsn), dsn)
        self.timestamp_at = self.decoder.columns.index("timestamp")

    def __call__(self, request: "RequestHandler") -> Response:
        if self.commits.full():  # before reading: a refused body is drained or the connection closed
            return busy()
        try:
            body = request.read_body()
        except BodyError as exc:
            return json_response(exc.status, {"error": str(exc)})
        try:
            token = dedup_token(request, body)
        except BadBody as exc:
            return json_response(400, {"error": str(exc), "index": None})
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type and content_type not in JSON_TYPES and not content_type.endswith("+json"):
            return json_response(415, {"error": f"Content-Type {content_type[:100]} is not JSON; send one of "
                                                f"{', '.join(JSON_TYPES)} or any */*+json (or none)"})
        principal = request.principal
        try:
            rows, lines = self.decoder.decode(body, principal.forced_filters, principal.name)
            months = months_of(rows, self.timestamp_at, self.commits.max_months)
        except BadBody as exc:
            data = {"error": str(exc), "index": exc.index}
            if exc.field:
                data["field"] = exc.field
            return json_response(400, data)
        except WrongOwner as exc:
            return json_response(403, {"error": str(exc), "index": exc.index, "field": exc.field})
        if not rows:
            return json_response(200, {"stored": 0})
        try:
            waiting = self.commits.submit(hashlib.sha256(token.encode()).hexdigest()[:32], lines, len(rows),
                                          months, sender=request.connection)
        except EngineRefused as exc:  # nothing of it stored; the requests grouped with it were
            return json_response(400, {"error": str(exc), "index": None})
        if waiting is None:
            return busy()
        if waiting.duplicate:
            return json_response(200, {"stored": 0, "duplicate": True})
        return json_response(200, {"stored": len(rows)}, events=len(rows))


def months_of(rows: list[list], at: int, limit: int) -> frozenset[str]:
    """The calendar months of the rows' timestamps (column `at`, "YYYY-MM-DD ..." text).

    The engine writes at most `limit` partitions, here months, in one INSERT and refuses
    the whole INSERT past it: a request spanning more is refused alone (0: no limit)."""
    months = frozenset([row[at][:7] for row in rows])
    if limit and len(months) > limit:
        seen: set[str] = set()  # the event that brings its month past the limit
        index = next(i for i, row in enumerate(rows) if seen.add(row[at][:7]) or len(seen) > limit)
        raise BadBody(f"index {index}: timestamp: one request's events may fall in at most {limit} calendar "
                      f"months (the engine's max_partitions_per_insert_block: the events table has a partition "
                      f"per month), and this event's month, {rows[index][at][:7]}, is month {limit + 1}; send "
                      f"the events in several requests, e.g. one per month", index=index, field="timestamp")
    return months


def busy() -> Response:
    return json_response(503, {"error": "ingest is busy: more events are waiting to be stored than "
                                        f"{MAX_WAITING_EVENTS}; retry shortly"}, **{"Retry-After": RETRY_AFTER_S})
