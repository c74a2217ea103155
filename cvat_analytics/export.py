"""CVAT's event CSV export: filters, the streaming writer, a job manager, HTTP handlers.

What a user gets is CVAT's `/api/events` export (reference/cvat.md §5 "Export"):

- rows of `<database>.events` with `source` in ('server', 'client'), without
  `send:exception` rows (CVAT leaves them out too: exceptions are for the
  Monitoring dashboard, not for the activity log a user downloads);
- filters org_id, project_id, task_id, job_id, user_id and a [from, to] window
  (both inclusive); no from/to means the last 30 days; only `to` means the 30
  days before it; only `from` means from then until now;
- a header of the spec's `events.columns` names, rows in timestamp order
  (ties broken by every other column, so an export is byte-for-byte
  reproducible), timestamps UTC "YYYY-MM-DD HH:MM:SS.mmm", NULL an empty field.

Memory. ORDER BY timestamp over a table sorted by (user_id, timestamp) is a full
sort, and a sort holds its input: measured on chdb, one ORDER BY over 1M rows
grows the process by ~430 MB. So `write_csv` first counts rows per hour
(a few hundred numbers), cuts the range into windows of at most `chunk_rows`
rows (an hour that is too heavy is cut by minute), and exports window after
window, each sorted on its own. The concatenation is exactly the global order,
and memory is bounded by the window, not by the export. ClickHouse formats the
CSV (`raw_stream`, format CSV, streamed block by block): ~10x faster than
formatting rows in Python. Its CSV quotes every string and writes an empty
string as `""` and NULL as nothing, so NULL and '' stay apart and an import of
the file restores exactly the same rows.

Every request value reaches ClickHouse as a bound parameter ({org_id:UInt64} ...);
only the spec's column names and database name (validated identifiers) are
written into the SQL text.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Callable

UTC = timezone.utc
ID_FILTERS = ("org_id", "project_id", "task_id", "job_id", "user_id")
DEFAULT_WINDOW = timedelta(days=30)
MAX_ID = 2**64 - 1
# DateTime64's range; a window outside it is clamped.
MIN_TIME = datetime(1900, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
CHUNK_ROWS = 100_000
JOB_TTL_S = 3600
# CVAT marked GET /api/events deprecated on 2025-03-17 (RFC 9745 header).
LEGACY_DEPRECATION = "@1742169600"

# -- SQL -------------------------------------------------------------------------
# {db:Identifier} and every {name:Type} are bound by ClickHouse; /*COLUMNS*/ and
# /*ORDER*/ are the spec's column names, quoted as identifiers.
_FILTER_SQL = """
    source IN ('server', 'client')
    AND scope != 'send:exception'
    AND timestamp >= {from:DateTime64(3, 'Etc/UTC')}
    AND timestamp <= {to:DateTime64(3, 'Etc/UTC')}
    AND ({org_id:Nullable(UInt64)} IS NULL OR org_id = {org_id:Nullable(UInt64)})
    AND ({project_id:Nullable(UInt64)} IS NULL OR project_id = {project_id:Nullable(UInt64)})
    AND ({task_id:Nullable(UInt64)} IS NULL OR task_id = {task_id:Nullable(UInt64)})
    AND ({job_id:Nullable(UInt64)} IS NULL OR job_id = {job_id:Nullable(UInt64)})
    AND ({user_id:Nullable(UInt64)} IS NULL OR user_id = {user_id:Nullable(UInt64)})
"""

# Rows per bucket; `unit` is 'hour' or 'minute' (chosen by code, never by a request).
BUCKETS_SQL = """
SELECT toUnixTimestamp(toStartOf/*UNIT*/(timestamp)) AS bucket, count() AS n
FROM {db:Identifier}.events
WHERE """ + _FILTER_SQL + """
    AND timestamp >= {lo:DateTime64(3, 'Etc/UTC')}
    AND timestamp < {hi:DateTime64(3, 'Etc/UTC')}
GROUP BY bucket
ORDER BY bucket
"""

# One window of the export, formatted by ClickHouse.
WINDOW_SQL = """
SELECT /*COLUMNS*/
FROM {db:Identifier}.events
WHERE """ + _FILTER_SQL + """
    AND timestamp >= {lo:DateTime64(3, 'Etc/UTC')}
    AND timestamp < {hi:DateTime64(3, 'Etc/UTC')}
ORDER BY /*ORDER*/
SETTINGS format_csv_null_representation = '', output_format_csv_crlf_end_of_line = 0,
    max_threads = 1, max_block_size = 8192, max_bytes_before_external_sort = 16000000
"""

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"not a plain column name: {name!r}")
    return f"`{name}`"


def column_names(spec: dict) -> list[str]:
    return [c["name"] for c in spec["events"]["columns"]]


# -- filters ---------------------------------------------------------------------
class FilterError(ValueError):
    """A bad query parameter; the HTTP answer is 400 naming it."""

    def __init__(self, param: str, reason: str):
        self.param = param
        self.reason = reason
        super().__init__(f"{param}: {reason}")


@dataclass(frozen=True)
class ExportFilters:
    from_: datetime
    to: datetime
    org_id: int | None = None
    project_id: int | None = None
    task_id: int | None = None
    job_id: int | None = None
    user_id: int | None = None

    def params(self) -> dict:
        """Bound parameters of the filter SQL."""
        p = {k: getattr(self, k) for k in ID_FILTERS}
        p["from"] = fmt_time(self.from_)
        p["to"] = fmt_time(self.to)
        return p


def fmt_time(value: datetime) -> str:
    """UTC, milliseconds: how ClickHouse and the CSV write DateTime64(3)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _one(query: dict, name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if isinstance(values, str):
        return values
    return values[-1]  # like Django's QueryDict.get: the last one wins


def _parse_id(name: str, text: str) -> int:
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,20}", text, re.ASCII):
        raise FilterError(name, f"must be a non-negative integer, got {text[:40]!r}")
    value = int(text)
    if value > MAX_ID:
        raise FilterError(name, f"must be at most {MAX_ID}")
    return value


# "+02:00" arrives as " 02:00" when a client forgets to percent-encode '+'.
_PLUS_AS_SPACE = re.compile(r"^(.*\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


def parse_time(name: str, text: str) -> datetime:
    """ISO 8601 (a date, or a date and time with optional fraction and zone; no zone = UTC)."""
    raw = text.strip()
    candidate = raw
    m = _PLUS_AS_SPACE.match(raw)
    if m and ("T" in raw or raw.count(" ") == 2):
        candidate = f"{m.group(1)}+{m.group(2)}"
    try:
        value = datetime.fromisoformat(candidate)
    except ValueError:
        raise FilterError(name, f"not an ISO 8601 date or time: {raw[:60]!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return min(max(value.astimezone(UTC), MIN_TIME), MAX_TIME)


def parse_filters(query: dict, now: datetime | None = None) -> ExportFilters:
    """Validate the export's query parameters (dict of lists, as `parse_qs` gives)."""
    ids = {}
    for name in ID_FILTERS:
        text = _one(query, name)
        if text is not None:
            ids[name] = _parse_id(name, text)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    from_text, to_text = _one(query, "from"), _one(query, "to")
    to = parse_time("to", to_text) if to_text is not None else now
    from_ = parse_time("from", from_text) if from_text is not None else to - DEFAULT_WINDOW
    if from_ > to:
        raise FilterError("from", f"{fmt_time(from_)} is after to ({fmt_time(to)})")
    return ExportFilters(from_=from_, to=to, **ids)


# -- the writer ------------------------------------------------------------------
def _buckets(client, database: str, filters: ExportFilters, unit: str,
             lo: datetime, hi: datetime) -> list[tuple[int, int]]:
    sql = BUCKETS_SQL.replace("/*UNIT*/", {"hour": "Hour", "minute": "Minute"}[unit])
    params = dict(filters.params(), db=database, lo=fmt_time(lo), hi=fmt_time(hi))
    return [(int(b), int(n)) for b, n in client.query(sql, parameters=params).result_rows]


def plan_windows(client, database: str, filters: ExportFilters,
                 chunk_rows: int = CHUNK_ROWS) -> list[tuple[datetime, datetime, int]]:
    """[lo, hi) windows of at most `chunk_rows` rows each (one minute may hold more)."""
    start = filters.from_
    end = filters.to + timedelta(milliseconds=1)  # `to` is inclusive
    pieces: list[tuple[datetime, datetime, int]] = []
    for bucket, n in _buckets(client, database, filters, "hour", start, end):
        lo = max(datetime.fromtimestamp(bucket, UTC), start)
        hi = min(datetime.fromtimestamp(bucket, UTC) + timedelta(hours=1), end)
        if n <= chunk_rows:
            pieces.append((lo, hi, n))
            continue
        for mb, mn in _buckets(client, database, filters, "minute", lo, hi):
            mlo = max(datetime.fromtimestamp(mb, UTC), lo)
            mhi = min(datetime.fromtimestamp(mb, UTC) + timedelta(minutes=1), hi)
            pieces.append((mlo, mhi, mn))
    windows: list[tuple[datetime, datetime, int]] = []
    for lo, hi, n in pieces:
        if windows and windows[-1][2] + n <= chunk_rows:
            wlo, _, wn = windows[-1]
            windows[-1] = (wlo, hi, wn + n)
        else:
            windows.append((lo, hi, n))
    return windows


def write_csv(client, spec: dict, filters: ExportFilters, fileobj: BinaryIO,
              progress: Callable[[int, int], None] | None = None,
              chunk_rows: int = CHUNK_ROWS) -> int:
    """Write the export to a binary file object; returns the number of rows.

    `progress(rows_done, rows_total)` is called after each window."""
    database = spec["clickhouse"]["database"]
    names = column_names(spec)
    columns = ", ".join(_ident(n) for n in names)
    order = ", ".join(_ident(n) for n in ["timestamp"] + [n for n in names if n != "timestamp"])
    sql = WINDOW_SQL.replace("/*COLUMNS*/", columns).replace("/*ORDER*/", order)
    fileobj.write((",".join(names) + "\n").encode())
    windows = plan_windows(client, database, filters, chunk_rows)
    total = sum(n for _, _, n in windows)
    done = 0
    if progress:
        progress(0, total)
    for lo, hi, n in windows:
        params = dict(filters.params(), db=database, lo=fmt_time(lo), hi=fmt_time(hi))
        stream = client.raw_stream(sql, parameters=params, fmt="CSV")
        try:
            shutil.copyfileobj(stream, fileobj, 1 << 16)
        finally:
            stream.close()
        done += n
        if progress:
            progress(done, total)
    return done


# -- jobs ------------------------------------------------------------------------
@dataclass
class Job:
    id: str
    filters: ExportFilters
    filename: str
    created: float
    status: str = "queued"  # queued | running | finished | failed
    reason: str | None = None
    path: Path | None = None
    rows: int = 0
    rows_total: int = 0
    started: float | None = None
    finished: float | None = None

    @property
    def expires(self) -> float:
        return (self.finished or self.created) + JOB_TTL_S


class ExportJobs:
    """Exports run on a small thread pool into files under `directory`.

    A job is kept until it is downloaded or for `ttl_s` after it finished
    (CVAT keeps its export cache 1 h); expired jobs are swept on every access."""

    def __init__(self, client_factory: Callable[[], object], spec: dict,
                 directory: str | Path | None = None, workers: int = 1,
                 ttl_s: float = JOB_TTL_S, chunk_rows: int = CHUNK_ROWS,
                 clock: Callable[[], float] = time.time):
        self.client_factory = client_factory
        self.spec = spec
        self.directory = Path(directory or tempfile.mkdtemp(prefix="cvat-analytics-export-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.chunk_rows = chunk_rows
        self.clock = clock
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(workers, 2)),
                                        thread_name_prefix="export")

    def submit(self, filters: ExportFilters, filename: str | None = None) -> Job:
        job = Job(id=str(uuid.uuid4()), filters=filters,
                  filename=filename or default_filename(self.clock()), created=self.clock())
        with self._lock:
            self._sweep()
            self._jobs[job.id] = job
        self._pool.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            self._sweep()
            return self._jobs.get(job_id)

    def take(self, job_id: str) -> BinaryIO | None:
        """The finished file, opened; the job is forgotten and the file unlinked
        (the open handle still reads it), so nothing is left behind."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status != "finished":
                return None
            del self._jobs[job_id]
        fh = open(job.path, "rb")
        _unlink(job.path)
        return fh

    def wait(self, job_id: str, timeout: float = 60.0) -> Job | None:
        """Block until the job leaves queued/running (for the CLI and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job is None or job.status in ("finished", "failed") or time.monotonic() > deadline:
                return job
            time.sleep(0.02)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for job in self._jobs.values():
                if job.path:
                    _unlink(job.path)
            self._jobs.clear()

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.client_factory()
        return client

    def _run(self, job: Job) -> None:
        with self._lock:
            if self._jobs.get(job.id) is not job:
                return  # expired before it started
            job.status, job.started = "running", self.clock()
        path = self.directory / f"{job.id}.csv"
        tmp = self.directory / f"{job.id}.csv.part"

        def progress(done: int, total: int) -> None:
            job.rows, job.rows_total = done, total

        try:
            with open(tmp, "wb") as fh:
                rows = write_csv(self._client(), self.spec, job.filters, fh, progress, self.chunk_rows)
            os.replace(tmp, path)
        except Exception as exc:  # the reason goes to the user (500), one line
            _unlink(tmp)
            text = str(exc).strip()
            job.reason = text.splitlines()[0][:500] if text else type(exc).__name__
            job.status, job.finished = "failed", self.clock()
            return
        with self._lock:
            job.rows, job.path = rows, path
            job.status, job.finished = "finished", self.clock()
            if self._jobs.get(job.id) is not job:
                _unlink(path)

    def _sweep(self) -> None:
        now = self.clock()
        for job_id, job in list(self._jobs.items()):
            if job.status in ("finished", "failed") and now >= (job.finished or job.created) + self.ttl_s:
                del self._jobs[job_id]
                if job.path:
                    _unlink(job.path)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def default_filename(now: float | None = None) -> str:
    """CVAT's default name, logs_<YYYY_MM_DD_HH_MM_SS>.csv (UTC)."""
    stamp = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    return f"logs_{stamp.strftime('%Y_%m_%d_%H_%M_%S')}.csv"


def sanitize_filename(name: str | None) -> str | None:
    """A safe attachment name: the last path part, [A-Za-z0-9._-] only, no leading dot."""
    if not name:
        return None
    base = re.split(r"[/\\]", name)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".")[:200]
    return base if base.strip("_") else None


# -- HTTP handlers ---------------------------------------------------------------
@dataclass
class Response:
    """What the server sends: `body` is bytes or an open binary file (copy it, then close it)."""
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | BinaryIO = b""


def _json(status: int, data, headers: dict | None = None) -> Response:
    body = json.dumps(data).encode()
    h = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    h.update(headers or {})
    return Response(status, h, body)


def _bad(param: str, reason: str, headers: dict | None = None) -> Response:
    return _json(400, {"detail": f"{param}: {reason}", "parameter": param}, headers)


def _attachment(fh: BinaryIO, filename: str, headers: dict | None = None) -> Response:
    size = os.fstat(fh.fileno()).st_size
    h = {"Content-Type": "text/csv; charset=utf-8",
         "Content-Disposition": f'attachment; filename="{filename}"',
         "Content-Length": str(size)}
    h.update(headers or {})
    return Response(200, h, fh)


def _start(jobs: ExportJobs, query: dict) -> Job | Response:
    """Validate and submit; a Response when the request is refused."""
    try:
        filters = parse_filters(query)
    except FilterError as exc:
        return _bad(exc.param, exc.reason)
    location = _one(query, "location")
    if location not in (None, "", "local"):
        return _bad("location", "only 'local' is available here (no cloud storage)")
    if _one(query, "cloud_storage_id") is not None:
        return _bad("cloud_storage_id", "cloud storage is not available here")
    return jobs.submit(filters, sanitize_filename(_one(query, "filename")))


def handle_legacy_get(jobs: ExportJobs, query: dict) -> Response:
    """GET /api/events: 202 {query_id} -> 202 running / 201 ready -> action=download 200."""
    dep = {"Deprecation": LEGACY_DEPRECATION, "Link": '</api/events/export>; rel="successor-version"'}
    action = _one(query, "action")
    if action not in (None, "", "download"):
        return _bad("action", f"unknown action {action[:40]!r}; the only action is 'download'", dep)
    query_id = _one(query, "query_id")
    if not query_id:
        if action:
            return _bad("query_id", "action=download needs the query_id of a started export", dep)
        started = _start(jobs, query)
        if isinstance(started, Response):
            started.headers.update(dep)
            return started
        return _json(202, {"query_id": started.id}, dep)
    try:
        parse_filters(query)  # the same parameters are repeated on every call; still check them
    except FilterError as exc:
        return _bad(exc.param, exc.reason, dep)
    job = jobs.get(query_id)
    if job is None:
        return _json(404, {"detail": f"unknown query_id {query_id[:64]!r} (expired or already downloaded)"}, dep)
    if job.status == "failed":
        return _json(500, {"detail": f"the export failed: {job.reason}"}, dep)
    if job.status != "finished":
        return _json(202, {"query_id": job.id, "status": job.status}, dep)
    if action == "download":
        filename = sanitize_filename(_one(query, "filename")) or job.filename
        fh = jobs.take(job.id)
        if fh is None:  # downloaded by a concurrent request
            return _json(404, {"detail": f"unknown query_id {query_id[:64]!r}"}, dep)
        return _attachment(fh, filename, dep)
    return _json(201, {"query_id": job.id, "status": "finished"}, dep)


def handle_export_post(jobs: ExportJobs, query: dict) -> Response:
    """POST /api/events/export (filters in the query string): 202 {rq_id}."""
    started = _start(jobs, query)
    if isinstance(started, Response):
        return started
    return _json(202, {"rq_id": started.id})


_RQ_STATUS = {"queued": "queued", "running": "started", "finished": "finished", "failed": "failed"}


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


def handle_request_status(jobs: ExportJobs, rq_id: str, base_url: str = "") -> Response:
    """GET /api/requests/{rq_id}: CVAT's request object, result_url once finished."""
    job = jobs.get(rq_id)
    if job is None:
        return _json(404, {"detail": f"unknown request {rq_id[:64]!r}"})
    status = _RQ_STATUS[job.status]
    body = {
        "id": job.id,
        "status": status,
        "message": job.reason or "",
        "progress": (job.rows / job.rows_total) if job.rows_total else (1.0 if status == "finished" else 0.0),
        "created_date": _iso(job.created),
        "started_date": _iso(job.started),
        "finished_date": _iso(job.finished),
        "expiry_date": _iso(job.expires) if job.finished else None,
        "operation": {"type": "export:events", "target": "events", "format": "CSV"},
        "result_url": f"{base_url}/api/events/download?rq_id={job.id}" if status == "finished" else None,
        "result_id": None,
    }
    return _json(200, body)


def handle_download(jobs: ExportJobs, query: dict) -> Response:
    """GET /api/events/download?rq_id=: the file (once), 404 unknown, 400 not ready, 500 failed."""
    rq_id = _one(query, "rq_id")
    if not rq_id:
        return _bad("rq_id", "required")
    job = jobs.get(rq_id)
    if job is None:
        return _json(404, {"detail": f"unknown rq_id {rq_id[:64]!r} (expired or already downloaded)"})
    if job.status == "failed":
        return _json(500, {"detail": f"the export failed: {job.reason}"})
    if job.status != "finished":
        return _bad("rq_id", f"the export is {job.status}, not finished yet")
    filename = sanitize_filename(_one(query, "filename")) or job.filename
    fh = jobs.take(job.id)
    if fh is None:
        return _json(404, {"detail": f"unknown rq_id {rq_id[:64]!r}"})
    return _attachment(fh, filename)


def export_to_path(client, spec: dict, filters: ExportFilters, path: str | Path | None,
                   out: BinaryIO | None = None) -> int:
    """The CLI's export: to `path` through a temporary file renamed at the end
    (nothing half-written), or to `out` (stdout) when path is None or '-'."""
    if path in (None, "-"):
        return write_csv(client, spec, filters, out)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            rows = write_csv(client, spec, filters, fh)
        os.replace(tmp, target)
    except BaseException:
        _unlink(Path(tmp))
        raise
    return rows
