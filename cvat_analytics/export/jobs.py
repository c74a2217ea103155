"""Exports run in the background: a small thread pool writes each into a file under the
export directory (see docs/cvat-compatibility.md, Export).

A request and its file are kept until `expiry_date` (`ttl_s` after it finished; CVAT
keeps its export cache 1 hour), so a broken download can be retried. What callers can
make the service do is bounded by `embedded.export` in the spec: jobs queued or running
(overall and per caller: ExportRefused, 429), the disk the export files take (507 for
new jobs; a job that would pass it fails), rows and seconds per job (the job fails,
naming the limit). Files left by a crash are removed when the jobs start.
"""
from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Callable

from ..errors import first_line
from .filters import UTC, ExportFilters
from .writer import CHUNK_ROWS, LimitExceeded, unlink, write_csv

JOB_TTL_S = 3600
_JOB_FILE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.csv(\.part)?$")


@dataclass(frozen=True)
class ExportLimits:
    """The spec's embedded.export."""
    max_jobs: int = 16
    max_jobs_per_caller: int = 4
    max_disk_bytes: int = 4 << 30
    max_rows: int = 20_000_000
    max_seconds: float = 1800
    max_memory_mb: int = 64

    @classmethod
    def from_spec(cls, spec: dict) -> "ExportLimits":
        return cls(**spec.get("embedded", {}).get("export", {}))


class ExportRefused(Exception):
    """A new export is refused: `status` (429/507), the spec key of the limit, Retry-After."""

    def __init__(self, status: int, limit: str, message: str, retry_after: int):
        super().__init__(message)
        self.status, self.limit, self.retry_after = status, limit, retry_after


class Cancelled(Exception):
    pass
LOG = logging.getLogger("cvat_analytics.export")


@dataclass
class Job:
    id: str
    filters: ExportFilters
    filename: str
    created: float
    owner: str = "local"  # the principal that started it; only it sees the job
    status: str = "queued"  # queued | running | finished | failed
    reason: str | None = None  # why it failed, fit for the caller; None: see the service log
    path: Path | None = None
    size: int = 0  # bytes of its file (or of the part written so far)
    rows: int = 0
    rows_total: int = 0
    started: float | None = None
    finished: float | None = None
    cancelled: bool = False
    ttl_s: float = JOB_TTL_S

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def expires(self) -> float | None:
        return self.finished + self.ttl_s if self.finished is not None else None


class ExportJobs:
    """Exports run on a small thread pool into files under `directory`; expired jobs
    are swept on every access."""

    def __init__(self, client_factory: Callable[[], object], spec: dict,
                 directory: str | Path | None = None, workers: int = 1,
                 ttl_s: float = JOB_TTL_S, chunk_rows: int = CHUNK_ROWS,
                 clock: Callable[[], float] = time.time, limits: ExportLimits | None = None):
        self.client_factory = client_factory
        self.spec = spec
        self.limits = limits or ExportLimits.from_spec(spec)
        self.directory = Path(directory or tempfile.mkdtemp(prefix="cvat-analytics-export-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.removed_at_start = self._remove_leftovers()
        self.ttl_s = ttl_s
        self.chunk_rows = chunk_rows
        self.clock = clock
        self._jobs: dict[str, Job] = {}
        self._disk_bytes = 0  # bytes of every job file, finished or being written
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(workers, 2)),
                                        thread_name_prefix="export")

    def _remove_leftovers(self) -> int:
        """Files of a process that died: nobody can ask for them, and they count against no bound."""
        removed = 0
        for entry in self.directory.iterdir():
            if _JOB_FILE.match(entry.name) and entry.is_file():
                unlink(entry)
                removed += 1
        return removed

    def submit(self, filters: ExportFilters, filename: str | None = None, owner: str = "local") -> Job:
        """Queue an export; ExportRefused when a bound of embedded.export is reached."""
        job = Job(id=str(uuid.uuid4()), filters=filters, filename=filename or default_filename(self.clock()),
                  created=self.clock(), owner=owner, ttl_s=self.ttl_s)
        with self._lock:
            self._sweep()
            self._check_room(owner)
            self._jobs[job.id] = job
        self._pool.submit(self._run, job)
        return job

    def _check_room(self, owner: str) -> None:
        active = [j for j in self._jobs.values() if j.active]
        retry = self._retry_after(active)
        mine = sum(1 for j in active if j.owner == owner)
        if mine >= self.limits.max_jobs_per_caller:
            raise ExportRefused(429, "embedded.export.max_jobs_per_caller",
                                f"{mine} of your exports are queued or running; at most "
                                f"{self.limits.max_jobs_per_caller} are allowed per caller "
                                "(embedded.export.max_jobs_per_caller): download or cancel one first", retry)
        if len(active) >= self.limits.max_jobs:
            raise ExportRefused(429, "embedded.export.max_jobs",
                                f"{len(active)} exports are queued or running; at most {self.limits.max_jobs} "
                                "are allowed (embedded.export.max_jobs): try again later", retry)
        if self._disk_bytes >= self.limits.max_disk_bytes:
            kept = [j.expires for j in self._jobs.values() if j.expires is not None]
            wait = min(kept) - self.clock() if kept else self.ttl_s
            raise ExportRefused(507, "embedded.export.max_disk_bytes",
                                f"export files take {self._disk_bytes} bytes; at most {self.limits.max_disk_bytes} "
                                "may be kept (embedded.export.max_disk_bytes): try again once older exports "
                                "expire", max(1, math.ceil(wait)))

    def _retry_after(self, active: list[Job]) -> int:
        """Seconds until a slot is likely free: the running job's pace, else a few seconds."""
        now = self.clock()
        for job in active:
            if job.status == "running" and job.rows and job.rows_total and job.started is not None:
                pace = (now - job.started) / job.rows
                return max(1, min(60, math.ceil(pace * (job.rows_total - job.rows))))
        return 5

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            self._sweep()
            return self._jobs.get(job_id)

    def list(self, owner: str) -> list[Job]:
        """The owner's jobs, newest first."""
        with self._lock:
            self._sweep()
            return sorted((j for j in self._jobs.values() if j.owner == owner), key=lambda j: -j.created)

    def states(self) -> dict[str, int]:
        """How many jobs are in each state (GET /metrics)."""
        with self._lock:
            self._sweep()
            return dict(Counter(job.status for job in self._jobs.values()))

    def open(self, job_id: str) -> BinaryIO | None:
        """The finished file, opened; it stays (until the job expires) for another try."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status != "finished":
                return None
            return open(job.path, "rb")

    def take(self, job_id: str) -> BinaryIO | None:
        """The finished file, opened; the job is forgotten and the file unlinked (the open
        handle still reads it). CVAT's legacy GET /api/events deletes its job on download."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status != "finished":
                return None
            fh = open(job.path, "rb")
            self._forget(job)
        return fh

    def cancel(self, job_id: str) -> bool:
        """Forget a job (a running one stops at its next write) and delete its file."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return False
            job.cancelled = True
            if job.status != "running":
                self._forget(job)
            else:
                del self._jobs[job.id]  # the run deletes its part file and gives the bytes back
        return True

    def wait(self, job_id: str, timeout: float = 60.0) -> Job | None:
        """Block until the job leaves queued/running (for the CLI and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job is None or not job.active or time.monotonic() > deadline:
                return job
            time.sleep(0.02)

    def shutdown(self) -> None:
        with self._lock:
            for job in self._jobs.values():
                job.cancelled = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for job in list(self._jobs.values()):
                self._forget(job)

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.client_factory()
        return client

    def _run(self, job: Job) -> None:
        with self._lock:
            if self._jobs.get(job.id) is not job or job.cancelled:
                return  # cancelled or expired before it started
            job.status, job.started = "running", self.clock()
        path = self.directory / f"{job.id}.csv"
        tmp = self.directory / f"{job.id}.csv.part"
        deadline = time.monotonic() + self.limits.max_seconds

        def progress(done: int, total: int) -> None:
            job.rows, job.rows_total = done, total

        try:
            with open(tmp, "wb") as raw:
                out = _Bounded(raw, self, job, deadline)
                rows = write_csv(self._client(), self.spec, job.filters, out, progress, self.chunk_rows,
                                 max_rows=self.limits.max_rows, time_left=lambda: deadline - time.monotonic())
            os.replace(tmp, path)
        except Exception as exc:
            unlink(tmp)
            with self._lock:
                self._disk_bytes -= job.size
                job.size = 0
            if isinstance(exc, Cancelled):
                return
            if isinstance(exc, LimitExceeded):
                job.reason = str(exc)
            elif time.monotonic() >= deadline:  # the engine stopped a query at max_execution_time
                job.reason = _too_long(self.limits)
            # ClickHouse's text stays in the log: it can name tables, settings, paths. Logged
            # before the status says failed, so whoever sees the failure finds its line.
            LOG.error("export %s failed: %s", job.id, job.reason or first_line(exc), exc_info=True)
            job.status, job.finished = "failed", self.clock()
            return
        with self._lock:
            job.rows, job.path = rows, path
            job.status, job.finished = "finished", self.clock()
            LOG.info("export %s finished: %d rows in %.1f s", job.id, rows, job.finished - job.started)
            if self._jobs.get(job.id) is not job:  # cancelled as it finished
                self._forget(job)

    def charge(self, job: Job, size: int) -> None:
        """Count `size` more bytes for `job`'s file; LimitExceeded past max_disk_bytes."""
        with self._lock:
            if self._disk_bytes + size > self.limits.max_disk_bytes:
                raise LimitExceeded(f"the export directory would hold more than {self.limits.max_disk_bytes} "
                                    "bytes (embedded.export.max_disk_bytes): narrow the filters or wait "
                                    "for older exports to expire")
            self._disk_bytes += size
            job.size += size

    def _forget(self, job: Job) -> None:
        """Drop a job and its file (the lock is held)."""
        self._jobs.pop(job.id, None)
        if job.path is not None:
            unlink(job.path)
            self._disk_bytes -= job.size
            job.size = 0

    def _sweep(self) -> None:
        now = self.clock()
        for job in list(self._jobs.values()):
            if job.expires is not None and now >= job.expires:
                self._forget(job)


class _Bounded:
    """The job's file: every write is charged against the disk bound, and checked
    against the job's time bound and a cancel."""

    def __init__(self, fileobj: BinaryIO, jobs: ExportJobs, job: Job, deadline: float):
        self.fileobj, self.jobs, self.job, self.deadline = fileobj, jobs, job, deadline

    def write(self, data) -> int:
        if self.job.cancelled:
            raise Cancelled()
        if time.monotonic() > self.deadline:
            raise LimitExceeded(_too_long(self.jobs.limits))
        self.jobs.charge(self.job, len(data))
        return self.fileobj.write(data)


def _too_long(limits: ExportLimits) -> str:
    return f"the export ran longer than {limits.max_seconds:g} s (embedded.export.max_seconds): narrow the filters"


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
