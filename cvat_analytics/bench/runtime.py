"""The working-time refresh as the bench times it: ClickHouse keeps the totals current
with two refreshable views (migration 0018); the bench starts a refresh out of schedule,
waits for it, and reads the views' own cost from system.view_refreshes."""
from __future__ import annotations

import time

from .. import working_time
from ..service.ingest import parse_events
from . import statements

__all__ = ["parse_events", "refresh_working_time", "refresh_after_new_events"]


WORKING_TIME_VIEWS = ["working_time_refresh_plan", "working_time_refresh"]
PRODUCTIVITY_VIEWS = ["productivity_refresh"]


def _refresh(client, spec: dict) -> dict:
    """wait_current (every refresh of the store), its wall time, and each refresh's own cost."""
    started = time.monotonic()
    working_time.wait_current(client, spec, timeout_s=3600)
    wall_s = time.monotonic() - started
    db = spec["clickhouse"]["database"]
    cost_ms, read_rows = statements.rows(client, "view_refresh_cost", db=db, views=WORKING_TIME_VIEWS)[0]
    p_ms, p_rows = statements.rows(client, "view_refresh_cost", db=db, views=PRODUCTIVITY_VIEWS)[0]
    return {"wall_s": wall_s, "view_ms": int(cost_ms or 0), "read_rows": int(read_rows or 0),
            "productivity_view_ms": int(p_ms or 0), "productivity_read_rows": int(p_rows or 0)}


def refresh_working_time(client, spec: dict) -> dict:
    """Bring the totals up to date with everything loaded (the first refresh is a full one).
    Call it once the load is older than the view's commit margin
    (working_time.wait_past_commit_margin), as on a live install: a run takes again what
    was inserted within the margin before the previous run started, so otherwise the
    next refresh would recompute the load's last minute, not the 1,000 new events."""
    return _refresh(client, spec)


def refresh_after_new_events(client, spec: dict, kind: str = "client") -> dict:
    """1,000 new `kind` (client, server) events, then the state exact again: time and the views'
    own cost (client events for the working time, server events for the productivity state)."""
    statements.run(client, f"new_{kind}_events", db=spec["clickhouse"]["database"])
    return _refresh(client, spec)
