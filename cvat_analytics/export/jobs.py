"""Exports run in the background: a small thread pool writes each into a file, kept
until it is downloaded or for `ttl_s` after it finished (CVAT keeps its export cache 1 h)."""
from __future__ import annotations

import logging
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
from .writer import CHUNK_ROWS, unlink, write_csv

JOB_TTL_S = 3600
LOG = logging.getLogger("cvat_analytics.export")


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
    """Exports run on a small thread pool into files under `directory`; expired jobs
    are swept on every access."""

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

    def states(self) -> dict[str, int]:
        """How many jobs are in each state (GET /metrics)."""
        with self._lock:
            self._sweep()
            return dict(Counter(job.status for job in self._jobs.values()))

    def take(self, job_id: str) -> BinaryIO | None:
        """The finished file, opened; the job is forgotten and the file unlinked
        (the open handle still reads it), so nothing is left behind."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status != "finished":
                return None
            del self._jobs[job_id]
        fh = open(job.path, "rb")
        unlink(job.path)
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
                    unlink(job.path)
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
            unlink(tmp)
            job.reason = first_line(exc)[:500]
            job.status, job.finished = "failed", self.clock()
            LOG.error("export %s failed: %s", job.id, job.reason, exc_info=True)
            return
        with self._lock:
            job.rows, job.path = rows, path
            job.status, job.finished = "finished", self.clock()
            LOG.info("export %s finished: %d rows in %.1f s", job.id, rows, job.finished - job.started)
            if self._jobs.get(job.id) is not job:
                unlink(path)

    def _sweep(self) -> None:
        now = self.clock()
        for job_id, job in list(self._jobs.items()):
            if job.status in ("finished", "failed") and now >= (job.finished or job.created) + self.ttl_s:
                del self._jobs[job_id]
                if job.path:
                    unlink(job.path)


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
