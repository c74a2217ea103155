"""`cvat-analytics bench`: every headline figure against its baseline, measured in one run.

What it does (docs/benchmarks.md):

1. generates N realistic events with the demo generator and bulk-loads them into a fresh
   embedded store (our schema, a bulk insert from the chunk files with `file()`, then the first
   working-time refresh), and the same rows into a table with CVAT's original schema;
2. measures, each engine phase in a process of its own (chdb: one data path per process;
   each phase's peak RSS is its own `ru_maxrss`):
   - working time over all users: the window SQL and the executable UDF against CVAT's
     per-batch loop (cvat_analytics/cvat_reference.py) on the same rows;
   - ingest: events/s into `cvat-analytics serve` over HTTP on 127.0.0.1 with JSON array
     bodies of 100 and 1000 events from concurrent senders, against the engine's own insert
     rate of the same rows through clickhouse-connect;
   - dashboards: each panel over the last 7 days on our schema against CVAT's schema; each
     Productivity panel against the same question from raw events (working time by CVAT's
     rule when asked instead of the refresh's totals), both answers compared;
   - export: rows/s and the service's peak memory for a 1M-row CSV export, against CVAT's
     export code (query everything, then csv.writer) on its schema;
   - storage: bytes on disk per event, ours against CVAT's;
3. prints a table and writes the same as JSON.

`bench soak` (soak.py) is the long run: steady ingest into `serve`, memory, latency and the
refresh's cost per minute, nothing lost, totals exact.

The rooms:

- orchestrator.py          `run`: the phases in child processes, serve measured over HTTP
- __main__.py              one phase in this process (how the orchestrator starts them)
- generate.py              demo events as chunk files; CVAT's wire bodies for ingest
- load.py                  the bulk load, the copy to CVAT's schema, storage
- working_time_engines.py  our working time: window SQL, precomputed totals, UDF
- cvat_baselines.py        CVAT's working-time loop and CSV export, timed on CVAT's schema
- panels.py                dashboard panels, ours against CVAT's schema (Productivity: against raw events)
- ingest.py                the engine's insert ceiling; serve's validation rate
- load_generator.py        HTTP senders posting CVAT's bodies to serve
- export_download.py       GET /api/events on serve, downloaded and counted
- service.py               serve in a child process (also used by the tests)
- soak.py                  `bench soak`: steady ingest into serve for N minutes, measured each minute
- runtime.py               the runtime calls other work is moving (body parser, refresh)
- measure.py               memory, machine, a query's median time
- statements.py            the SQL templates in templates/, rendered and bound
- report.py                figures with ratios; the table
"""
from __future__ import annotations

from .orchestrator import DEFAULT_EVENTS, run

__all__ = ["DEFAULT_EVENTS", "run"]
