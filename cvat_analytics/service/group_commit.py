"""Group commit: valid requests that arrive together are stored together, each exactly once.

One thread takes whatever is waiting and writes it as one INSERT, so one part and one
fsync for the group, where each request used to cost one of each. Before it takes them,
it waits briefly for senders that are busy but not queued yet (GroupCommit._linger):
with 4 closed-loop senders, groups of 4 instead of alternating groups of 2. A request is
answered only after that insert returned (a returned chdb insert is durable).

A retried request counts once: its deduplication key (the body's sha256, or the
caller's Idempotency-Key) is recorded in <db>.ingest_requests by the group's INSERT
itself (migrations 0011, 0014), and a group leaves out the requests found there. On
chdb, where serve is the only writer of its store, a filter of the stored keys
(stored_keys.StoredKeys) spares a group the look-up when none of its keys can be
there: the usual case.

One request must not fail the others. A group never holds more calendar months than the
engine writes in one INSERT (max_partitions_per_insert_block; the events table has one
partition per month), and when a group's INSERT fails all the same, its requests are
stored again one by one: the good ones are stored and acknowledged, and only the one the
engine refuses gets its error (EngineRefused, a 400, when the error is about its rows).
"""
from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections import deque
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from cvat_analytics_generator.sql import parse

from ..errors import first_line
from ..store import INSERT_REGISTRY, chdb_path, insert_compact_rows
from .logs import SERVICE
from .stored_keys import StoredKeys

# Group commit bounds. A group is at most this many events (one INSERT block, well
# under ClickHouse's max_insert_block_size, so one part per partition) ...
MAX_GROUP_EVENTS = 100_000
# ... and validated events waiting for the engine beyond this get 503 + Retry-After:
# when the engine cannot keep up, callers retry later instead of piling up in memory.
MAX_WAITING_EVENTS = 200_000
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
GROUPS_FAILED = Counter("cvat_analytics_ingest_groups_failed", "Groups whose INSERT failed, then stored request by request",
                        registry=INSERT_REGISTRY)

# Engine errors about the rows of a request rather than the engine: a resend would fail
# the same way, so the sender gets a 400 and stops. Any other error is a 500 (retried).
DATA_ERROR = re.compile(r"\((CANNOT_PARSE_[A-Z_]+|INCORRECT_DATA|TYPE_MISMATCH|VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE)\)"
                        r"|Too many partitions for single INSERT block")


class EngineRefused(Exception):
    """The engine refused a request's rows for what they hold (400, not 500)."""


def redo_path(spec: dict, dsn: str) -> Path:
    """Where group commit keeps the group in flight: beside the chdb data (one file per
    database), or under embedded.data_dir for a ClickHouse server."""
    data = chdb_path(dsn)
    folder = data.resolve().parent / f"{data.name}-ingest" if data else Path(spec["embedded"]["data_dir"]) / "ingest"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{spec['clickhouse']['database']}.redo"


class Waiting:
    """One validated request waiting for its group's insert."""

    __slots__ = ("key", "lines", "events", "months", "done", "duplicate", "error")

    def __init__(self, key: str, lines: bytes, events: int, months: frozenset[str]):
        self.key, self.lines, self.events, self.months = key, lines, events, months
        self.done = threading.Event()
        self.duplicate = False
        self.error: BaseException | None = None


class GroupCommit:
    """One thread that stores what is waiting, as one INSERT per group, and answers each request.

    Requests are grouped by arrival: while a group's insert runs, the next group gathers,
    up to MAX_GROUP_EVENTS events and `max_months` calendar months. A request already
    stored (its key in <db>.ingest_requests, or earlier in the same group) is left out and
    answered as a duplicate once the group is stored.

    A kill -9 can fall after the group's rows are stored but before the view (the
    materialized view ingest_requests_mv, migrations 0011/0014) has listed its requests: their retries would be stored again. So the group (token and rows)
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
        # The engine's partitions per INSERT: a request may span this many months (Ingest
        # refuses more), a group as many (0: no limit).
        self.max_months = int(client.command(self.sql.named("max_partitions")))
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

    def submit(self, key: str, lines: bytes, events: int, months: frozenset[str],
               sender: socket.socket | None = None) -> Waiting | None:
        """Wait until the request is stored (or found stored before); None when the queue is full.
        EngineRefused when the engine refuses its rows."""
        waiting = Waiting(key, lines, events, months)
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
                group, events, months = [], 0, set()
                while self.queue and (not group or self._fits(events, months, self.queue[0])):
                    waiting = self.queue.popleft()
                    group.append(waiting)
                    events += waiting.events
                    months |= waiting.months
            GROUP_REQUESTS.observe(len(group))
            try:
                self._store_apart_if_refused(group)
            finally:
                with self.lock:
                    self.waiting_events -= events
                WAITING_EVENTS.dec(events)
                for waiting in group:
                    waiting.done.set()

    def _fits(self, events: int, months: set[str], waiting: Waiting) -> bool:
        if events + waiting.events > MAX_GROUP_EVENTS:
            return False
        return not self.max_months or len(months | waiting.months) <= self.max_months

    def _store_apart_if_refused(self, group: list[Waiting]) -> None:
        """The group as one INSERT; if that fails, each request alone, so that one request
        the engine refuses fails nobody else. A request found stored by then (the failed
        INSERT stored it after all, or a copy earlier in the group) is a duplicate: once."""
        try:
            self._store(group)
            return
        except Exception as exc:
            SERVICE.error("storing %d requests failed: %s: %s", len(group), type(exc).__name__, first_line(exc))
            if len(group) == 1:
                group[0].error = _answer(exc)
                return
        GROUPS_FAILED.inc()
        for waiting in group:
            try:
                self._store([waiting])
            except Exception as exc:
                SERVICE.error("storing a request of %d events alone failed: %s: %s", waiting.events,
                              type(exc).__name__, first_line(exc))
                waiting.error = _answer(exc)

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
            waiting.duplicate = waiting.key in known  # set again when a failed group is stored apart
            if not waiting.duplicate:
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


def _answer(exc: Exception) -> Exception:
    """What the sender gets: EngineRefused (400) when the engine's error is about the rows."""
    text = first_line(exc)
    if not DATA_ERROR.search(text):
        return exc
    reason = text.rsplit("DB::Exception: ", 1)[-1]
    return EngineRefused(f"the engine refused these events: {reason[:300]}")
