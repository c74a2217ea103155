"""The refreshes as the bench times them: ClickHouse keeps the working-time totals current
with two refreshable views (migration 0018) and the productivity state with one (0026); the
bench starts a refresh out of schedule, waits for it, and reads the views' own cost from
system.view_refreshes."""
from __future__ import annotations

import threading
import time

from cvat_analytics_generator.sql import ident

from .. import working_time
from ..service.ingest import parse_events
from . import statements

__all__ = ["parse_events", "refresh_working_time", "refresh_after_new_events", "refresh_productivity"]


WORKING_TIME_VIEWS = ["working_time_refresh_plan", "working_time_refresh"]


def _timed(client, db: str, views: list[str], wall_s: float) -> dict:
    """A refresh's wall time beside its views' own cost of their last runs, as the engine tells it."""
    cost_ms, read_rows = statements.rows(client, "view_refresh_cost", db=db, views=views)[0]
    return {"wall_s": wall_s, "view_ms": int(cost_ms or 0), "read_rows": int(read_rows or 0)}


class RunWatcher:
    """Every run of the working-time views that ends while it watches, their cost summed.

    system.view_refreshes keeps each view's last run only, and a full refresh is several (a bucket
    of users a run, scheduled runs among them): read once at the end it gave one bucket's cost as
    the full refresh's (0.31 s and 75,386 rows at 10M, where the wall time was 32 s). A handle of
    its own polls every 50 ms (a view's runs are further apart: the plan's and the applying
    view's alternate); a run seen twice counts once (view_refresh_runs.sql.j2 says how it is told:
    a first version that told runs by their rows too counted a running one at every poll, 152 runs
    and 152 s of engine time in a 24 s refresh)."""

    def __init__(self, handle, db: str):
        self.handle, self.db, self.seen = handle, db, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _runs(self) -> dict:
        """{(view, end, ms): rows read, or None while the view runs again}"""
        return {tuple(run[:3]): run[3] for run in statements.rows(self.handle, "view_refresh_runs", db=self.db,
                                                                   views=WORKING_TIME_VIEWS)}

    def _poll(self) -> None:
        while True:
            for run, read in self._runs().items():
                if self.seen.get(run) is None:
                    self.seen[run] = read
            if self.stop.wait(0.05):
                return

    def __enter__(self) -> "RunWatcher":
        # the runs that ended before: not this refresh's
        self.before = set(self._runs())
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._poll()  # the last runs, ended since the last poll (stop is set: one pass)

    def cost(self) -> tuple[int, int, int]:
        """(engine ms, rows read, runs) of the runs that ended while watching (the rows of a run
        followed at once by the next are not known: not counted)."""
        runs = {run: read for run, read in self.seen.items() if run not in self.before}
        return sum(run[2] for run in runs), sum(read or 0 for read in runs.values()), len(runs)


def _refresh(client, spec: dict) -> dict:
    """wait_current (every refresh of the store), its wall time, and the working-time views' own cost
    of their last runs."""
    started = time.monotonic()
    working_time.wait_current(client, spec, timeout_s=3600)
    return _timed(client, spec["clickhouse"]["database"], WORKING_TIME_VIEWS, time.monotonic() - started)


def refresh_working_time(client, spec: dict, handle) -> dict:
    """Bring the totals up to date with everything loaded (the first refresh is a full one).
    Call it once the load is older than the view's commit margin
    (working_time.wait_past_commit_margin), as on a live install: a run takes again what
    was inserted within the margin before the previous run started, so otherwise the
    next refresh would recompute the load's last minute, not the 1,000 new events.
    Its cost is every run of the views until then (a full refresh is several: RunWatcher, on
    `handle`, a client of its own on the same store: store.open_handle), the wait's last idle
    round included."""
    started = time.monotonic()
    with RunWatcher(handle, spec["clickhouse"]["database"]) as watcher:
        working_time.wait_current(client, spec, timeout_s=3600)
    view_ms, read_rows, runs = watcher.cost()
    return {"wall_s": time.monotonic() - started, "view_ms": view_ms, "read_rows": read_rows, "runs": runs}


def refresh_after_new_events(client, spec: dict) -> dict:
    """1,000 new client events, then the totals exact again: time and the views' own cost (the
    last plan and applying run: the one that took them)."""
    statements.run(client, "new_client_events", db=spec["clickhouse"]["database"])
    return _refresh(client, spec)


def refresh_productivity(client, spec: dict, full: bool = False, new_server_events: bool = False) -> dict:
    """One run of the productivity state's view (queries/productivity_state.jinja), started and
    waited for: its wall time and its own cost. `full`: the runs before it forgotten, so it
    recomputes everything (as its first run on a store does); `new_server_events`: 1,000 of them
    inserted first.

    The view runs on its schedule too, so it is stopped first (which cancels a run in flight):
    otherwise a scheduled run that read the log before the truncate, or the events before the
    insert, is the one a WAIT waits for (a 10M bench once timed such a run as its full
    baseline: 0.28 s, 4,083 rows). START re-enables it, and runs it at once only when its
    schedule is due, so REFRESH asks for the run; ours is the first logged with a watermark (its
    start) after the moment it was asked for. A second run REFRESH may have queued behind one
    that START began is stopped before the cost of ours is read."""
    db = spec["clickhouse"]["database"]
    view = f"{ident(db)}.productivity_refresh"
    client.command(f"SYSTEM STOP VIEW {view}")
    if full:
        statements.run(client, "productivity_forget_runs", db=db)
    if new_server_events:
        statements.run(client, "new_server_events", db=db)
    asked_at = client.query("SELECT toString(now64(6, 'UTC'))").result_rows[0][0]
    started = time.monotonic()
    for action in ("START", "REFRESH"):
        client.command(f"SYSTEM {action} VIEW {view}")
    while True:
        client.command(f"SYSTEM WAIT VIEW {view}")
        if int(statements.run(client, "productivity_runs_since", db=db, since=asked_at)):
            break
        if time.monotonic() - started > 3600:
            raise TimeoutError(f"{db}.productivity_refresh logged no run within an hour of asking for one")
        time.sleep(0.05)
    wall_s = time.monotonic() - started
    client.command(f"SYSTEM STOP VIEW {view}")
    try:
        return _timed(client, db, ["productivity_refresh"], wall_s)
    finally:
        client.command(f"SYSTEM START VIEW {view}")
