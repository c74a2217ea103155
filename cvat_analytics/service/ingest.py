"""POST /: the events CVAT's server sends to Vector's http_server, taken here directly.

The body is a JSON array of events; also one object, or NDJSON. A request is all or
nothing: every event is validated first (events_fast, with events.EventContract as
the reference), in the request's own thread. Valid requests that arrive together are
then stored together (group commit): one thread takes whatever is waiting and writes
it as one INSERT, so one part and one fsync for the group, where each request used to
cost one of each. Before it takes them, it waits briefly for senders that are busy but
not queued yet (GroupCommit._linger): with 4 closed-loop senders, groups of 4 instead
of alternating groups of 2. A request is answered only after that insert returned (a returned
chdb insert is durable); a bad request never joins a group.

A retried request counts once: its deduplication key (the body's sha256, or the
caller's Idempotency-Key) is recorded in <db>.ingest_requests by the group's INSERT
itself (migrations 0011, 0014), and a group leaves out the requests found there. The
answer says which: {"stored": n}, or {"stored": 0, "duplicate": true}. On chdb, where
serve is the only writer of its store, a filter of the stored keys (StoredKeys) spares
a group the look-up when none of its keys can be there: the usual case.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from prometheus_client import Gauge, Histogram

from cvat_analytics_generator.sql import parse

from ..errors import first_line
from ..events import EventContract, EventError
from ..events_fast import FastRows, UseReference
from ..store import INSERT_REGISTRY, chdb_path, insert_compact_rows
from .http import BodyError
from .responses import Response, json_response
from .logs import SERVICE

if TYPE_CHECKING:
    from .http import RequestHandler

# Content types a JSON body may come with; none at all is accepted too (Vector does not look).
# curl --data sends application/x-www-form-urlencoded with the body as given: a JSON body
# posted that way is taken, as Vector's http_server takes it.
JSON_TYPES = ("application/json", "application/x-ndjson", "application/ndjson",
              "application/jsonlines", "application/x-jsonlines", "text/plain",
              "application/x-www-form-urlencoded")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces
# Group commit bounds. A group is at most this many events (one INSERT block, well
# under ClickHouse's max_insert_block_size, so one part per partition) ...
MAX_GROUP_EVENTS = 100_000
# ... and validated events waiting for the engine beyond this get 503 + Retry-After:
# when the engine cannot keep up, callers retry later instead of piling up in memory.
MAX_WAITING_EVENTS = 200_000
RETRY_AFTER_S = "1"
REQUESTS_SQL = "clickhouse/runtime/ingest_requests.sql.j2"
# A group waits at most LINGER_S for the next request of each sender (open connection)
# that submitted within SENDER_WINDOW_S: under load, senders answered by the previous group
# send again within a millisecond or two, and one insert for all of them costs about what
# one for half of them does (an INSERT's cost is mostly per part, not per row). A sender
# quieter than the window, or whose connection closed (a new connection per request), is
# not waited for, so light traffic pays nothing.
LINGER_S = 0.010
SENDER_WINDOW_S = 0.2


# Process-wide, beside the insert latency (GET /metrics shows them).
GROUP_REQUESTS = Histogram("cvat_analytics_ingest_group_requests", "Requests stored together by one INSERT (group commit)",
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=INSERT_REGISTRY)
WAITING_EVENTS = Gauge("cvat_analytics_ingest_waiting_events", "Validated events waiting for their group's INSERT",
                       registry=INSERT_REGISTRY)


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
        except BadBody as exc:
            data = {"error": str(exc), "index": exc.index}
            if exc.field:
                data["field"] = exc.field
            return json_response(400, data)
        except WrongOwner as exc:
            return json_response(403, {"error": str(exc), "index": exc.index, "field": exc.field})
        if not rows:
            return json_response(200, {"stored": 0})
        waiting = self.commits.submit(hashlib.sha256(token.encode()).hexdigest()[:32], lines, len(rows),
                                      sender=request.connection)
        if waiting is None:
            return busy()
        if waiting.duplicate:
            return json_response(200, {"stored": 0, "duplicate": True})
        return json_response(200, {"stored": len(rows)}, events=len(rows))


class StoredKeys:
    """A Bloom filter of the keys in <db>.ingest_requests: "not there" is certain, "maybe"
    is wrong about 1% of the time (then the table is asked). It is filled from the table
    at start and by each group after its INSERT, which is right only while this process
    is the table's one writer (a chdb store). About 1.2 MB per million keys; past its
    capacity it is rebuilt from the table at twice the size. Keys deleted from the table
    (expired) stay "maybe": that costs a look-up, never a lost request."""

    HASHES = 7  # with BITS_PER_KEY = 10: ~1% false "maybe"
    BITS_PER_KEY = 10
    MIN_CAPACITY = 1_000_000

    def __init__(self, client, sql):
        self.client, self.sql = client, sql
        self._load(0)

    def _load(self, capacity: int) -> None:
        """(Re)build from the table, for at least `capacity` keys and twice those stored."""
        self.capacity = max(capacity, 2 * int(self.client.command(self.sql.named("count"))), self.MIN_CAPACITY)
        self.bits = self.capacity * self.BITS_PER_KEY
        self.array = bytearray(self.bits // 8 + 1)
        self.count = 0
        stream = self.client.raw_stream(self.sql.named("all"), fmt="TabSeparated")
        try:  # streamed: a week of keys need not fit in memory as strings
            rest = b""
            while chunk := stream.read(1 << 20):
                *lines, rest = (rest + chunk).split(b"\n")
                for key in lines:
                    self.add(key.decode())
            if rest:
                self.add(rest.decode())
        finally:
            stream.close()

    def _positions(self, key: str):
        value = int(key, 16)  # keys are hex digests: their bits are the hashes
        low, high = value & 0xFFFFFFFFFFFFFFFF, (value >> 64) | 1
        return ((low + i * high) % self.bits for i in range(self.HASHES))

    def __contains__(self, key: str) -> bool:
        return all(self.array[p >> 3] & (1 << (p & 7)) for p in self._positions(key))

    def add(self, key: str) -> None:
        for p in self._positions(key):
            self.array[p >> 3] |= 1 << (p & 7)
        self.count += 1

    def add_stored(self, keys: list[str]) -> None:
        """A group's keys, once its INSERT returned."""
        for key in keys:
            self.add(key)
        if self.count > self.capacity:  # too full to stay ~1%: rebuilt, larger
            self._load(2 * self.capacity)


def redo_path(spec: dict, dsn: str) -> Path:
    """Where group commit keeps the group in flight: beside the chdb data (one file per
    database), or under embedded.data_dir for a ClickHouse server."""
    data = chdb_path(dsn)
    folder = data.resolve().parent / f"{data.name}-ingest" if data else Path(spec["embedded"]["data_dir"]) / "ingest"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{spec['clickhouse']['database']}.redo"


def busy() -> Response:
    return json_response(503, {"error": "ingest is busy: more events are waiting to be stored than "
                                        f"{MAX_WAITING_EVENTS}; retry shortly"}, **{"Retry-After": RETRY_AFTER_S})


class Waiting:
    """One validated request waiting for its group's insert."""

    __slots__ = ("key", "lines", "events", "done", "duplicate", "error")

    def __init__(self, key: str, lines: bytes, events: int):
        self.key, self.lines, self.events = key, lines, events
        self.done = threading.Event()
        self.duplicate = False
        self.error: BaseException | None = None


class GroupCommit:
    """One thread that stores what is waiting, as one INSERT per group, and answers each request.

    Requests are grouped by arrival only: while a group's insert runs, the next group
    gathers. A request already stored (its key in <db>.ingest_requests, or earlier in the
    same group) is left out and answered as a duplicate once the group is stored.

    A kill -9 can fall after the group's rows are stored but before the view has listed
    its requests: their retries would be stored again. So the group (token and rows)
    is first written to a redo file, removed once the insert returned; at start a redo
    file left behind is inserted again with the same token, and ClickHouse's own
    deduplication stores the rows if the crash came before they were stored and drops
    them if after; the view lists the requests either way. One group is in flight at a
    time, so the file holds at most one."""

    def __init__(self, client, spec: dict, columns: list[str], redo: Path, dsn: str = ""):
        from cvat_analytics_generator.render import render_template

        self.client = client
        self.database = spec["clickhouse"]["database"]
        self.columns = columns
        self.sql = parse(render_template(spec, REQUESTS_SQL), REQUESTS_SQL)
        self.redo = redo
        self.queue: deque[Waiting] = deque()
        self.senders: dict[socket.socket, float] = {}  # connection -> when it last submitted
        self.waiting_events = 0
        self.lock = threading.Condition()
        self.thread: threading.Thread | None = None
        self.replay()
        self.stored = StoredKeys(client, self.sql) if chdb_path(dsn) else None

    def replay(self) -> bool:
        """Insert again the group a stop cut short, if any (see above)."""
        try:
            token, body = self.redo.read_bytes().split(b"\n", 1)
        except FileNotFoundError:
            return False
        insert_compact_rows(self.client, self.database, self.columns, body, token=token.decode())
        self.redo.unlink()
        events = body.count(b"\n")
        SERVICE.info("replayed a group of %d events a stop may have cut short (%s)", events, self.redo)
        return True

    def full(self) -> bool:
        return self.waiting_events >= MAX_WAITING_EVENTS

    def submit(self, key: str, lines: bytes, events: int, sender: socket.socket | None = None) -> Waiting | None:
        """Wait until the request is stored (or found stored before); None when the queue is full."""
        waiting = Waiting(key, lines, events)
        with self.lock:
            if self.waiting_events and self.waiting_events + events > MAX_WAITING_EVENTS:
                return None
            if sender is not None:
                self.senders[sender] = time.monotonic()
            self.queue.append(waiting)
            self.waiting_events += events
            WAITING_EVENTS.inc(events)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self.thread.start()
            self.lock.notify()
        waiting.done.wait()
        if waiting.error is not None:
            raise waiting.error
        return waiting

    def _run(self) -> None:
        while True:
            with self.lock:
                while not self.queue:
                    self.lock.wait()
                self._linger()
                group, events = [], 0
                while self.queue and (not group or events + self.queue[0].events <= MAX_GROUP_EVENTS):
                    waiting = self.queue.popleft()
                    group.append(waiting)
                    events += waiting.events
            GROUP_REQUESTS.observe(len(group))
            try:
                self._store(group)
            except Exception as exc:  # every request of the group gets the 500; none is stored
                SERVICE.error("storing %d requests failed: %s: %s", len(group), type(exc).__name__,
                              first_line(exc))
                for waiting in group:
                    waiting.error = exc
            finally:
                with self.lock:
                    self.waiting_events -= events
                WAITING_EVENTS.dec(events)
                for waiting in group:
                    waiting.done.set()

    def _linger(self) -> None:
        """Wait (LINGER_S at most) until every recently active sender has a request queued:
        one insert for all of them instead of alternating half groups."""
        deadline = time.monotonic() + LINGER_S
        while self.waiting_events < MAX_GROUP_EVENTS and len(self.queue) < self._busy_senders():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # Woken by each new request; also every 2 ms, to drop a connection that closed meanwhile.
            self.lock.wait(min(left, 0.002))

    def _busy_senders(self) -> int:
        now = time.monotonic()
        self.senders = {s: t for s, t in self.senders.items() if now - t < SENDER_WINDOW_S and s.fileno() != -1}
        return len(self.senders)

    def _store(self, group: list[Waiting]) -> None:
        keys = sorted({waiting.key for waiting in group})
        known: set[str] = set()
        if self.stored is None or any(key in self.stored for key in keys):  # a "no" is certain
            known = {row[0] for row in self.client.query(self.sql.named("known"),
                                                         parameters={"requests": keys}).result_rows}
        storing, keys = [], []
        for waiting in group:
            if waiting.key in known:
                waiting.duplicate = True
            else:
                known.add(waiting.key)
                storing.append(waiting)
                keys.append(waiting.key)
        if not storing:
            return
        token = "ingest " + " ".join(keys)  # migration 0011's view lists the keys from it
        body = b"".join(w.lines for w in storing)
        pending = self.redo.with_suffix(".tmp")
        pending.write_bytes(token.encode() + b"\n" + body)
        os.replace(pending, self.redo)  # whole or absent, never half-written
        try:
            insert_compact_rows(self.client, self.database, self.columns, body, token=token)
        finally:  # stored, or failed with a 500 to its callers (who may send it again): not to be replayed
            self.redo.unlink(missing_ok=True)
            if self.stored is not None:  # even after a failure: "maybe" only costs a look-up
                self.stored.add_stored(keys)
