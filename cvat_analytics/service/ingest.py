"""POST /: the events CVAT's server sends to Vector's http_server, taken here directly.

The body is a JSON array of events; also one object, or NDJSON. A request is all or
nothing: every event is validated first (events.EventContract), then all rows go in
one insert, and 200 is sent only after the insert returned (a returned chdb insert is
durable). The insert carries a deduplication token, so a retried body is stored once.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING

from ..errors import first_line
from ..events import EventContract, EventError
from ..store import insert_json_rows
from .http import BodyError, Response, json_response

if TYPE_CHECKING:
    from .http import RequestHandler

# Content types a JSON body may come with; none at all is accepted too (Vector does not look).
JSON_TYPES = ("application/json", "application/x-ndjson", "application/ndjson",
              "application/jsonlines", "application/x-jsonlines", "text/plain")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces


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
    """ClickHouse's insert_deduplication_token for this request.

    With an `Idempotency-Key` header: the key, namespaced by the caller, so any body
    sent with the same key is stored once (the first one). Without: the body's
    sha256, so a byte-identical retry is stored once. The two never collide."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return "body:" + hashlib.sha256(body).hexdigest()
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadBody("Idempotency-Key: expected 1-200 printable ASCII characters without spaces")
    return f"key:{request.principal.name}:{key}"


class Ingest:
    """The POST / handler: validate every event, then store all of them in one insert."""

    def __init__(self, client, spec: dict):
        self.client = client
        self.database = spec["clickhouse"]["database"]
        self.contract = EventContract(spec)

    def __call__(self, request: "RequestHandler") -> Response:
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
            return json_response(415, {"error": f"Content-Type {content_type} is not JSON; send application/json"})
        try:
            rows = self.rows(parse_events(body))
        except BadBody as exc:
            data = {"error": str(exc), "index": exc.index}
            if exc.field:
                data["field"] = exc.field
            return json_response(400, data)
        if rows:
            insert_json_rows(self.client, self.database, b"".join(rows), token=token)
        return json_response(200, {"stored": len(rows)}, events=len(rows))

    def rows(self, incoming: list) -> list[bytes]:
        """Each event validated and turned into a JSONEachRow line; BadBody at the first fault."""
        rows = []
        for index, event in enumerate(incoming):
            try:
                rows.append(self.contract.to_line(self.contract.normalize(event, index)))
            except EventError as exc:
                raise BadBody(str(exc), index=exc.index, field=exc.field) from None
            except RecursionError:  # a value nested just below the parser's limit
                raise BadBody(f"index {index}: it is nested too deeply (events are flat objects)", index=index) from None
        return rows
