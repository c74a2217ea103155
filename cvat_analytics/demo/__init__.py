"""Realistic CVAT traffic, deterministic per seed: `cvat-analytics demo`.

- world.py    organizations, users, projects, tasks, jobs
- traffic.py  the events CVAT's UI and server send while that world annotates (`Demo`)
- wire.py     an event as CVAT sends it (`to_wire`) and as it is stored (`to_row`)
- senders.py  POST CVAT's bodies to a URL, or insert rows into a store

`--url` posts JSON arrays of ~100 events to a running service or Vector, the bodies CVAT
sends; `--dsn` inserts rows directly in 100k-row JSONEachRow batches (the fast path).
"""
from __future__ import annotations

import sys
import time

from ..progress import Progress
from .senders import insert_events, post_events
from .traffic import DEFAULT_DAYS, IDLE_MS, Demo
from .wire import to_row, to_wire

__all__ = ["DEFAULT_DAYS", "DEFAULT_EVENTS", "IDLE_MS", "Demo", "insert_events", "post_events", "run",
           "to_row", "to_wire"]

DEFAULT_EVENTS = 20_000


def run(n: int = DEFAULT_EVENTS, days: float = DEFAULT_DAYS, seed: int = 1, url: str | None = None,
        client=None, database: str | None = None, now_ms: int | None = None, err=sys.stderr) -> int:
    """The CLI's demo: to `url`, or into `client`/`database`. Returns the number of events."""
    demo = Demo(seed=seed, days=days, now_ms=now_ms)
    started = time.monotonic()
    with Progress("demo", total=n, stream=err) as progress:
        if url:
            sent = post_events(url, demo.events(n), progress=progress.update)
        else:
            sent = insert_events(client, database, demo.events(n), progress=progress.update)
    elapsed = time.monotonic() - started
    print(f"demo: {sent} events in {elapsed:.1f}s ({sent / max(elapsed, 1e-9):,.0f}/s), "
          f"{len(demo.users)} users, {len(demo.orgs)} organizations, {len(demo.projects)} projects, "
          f"over {days:g} days, seed {seed}", file=err)
    return sent
