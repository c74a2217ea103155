"""The two runtime entry points the bench calls that are being reshaped elsewhere, each
imported here only, so a move is a one-line change:

- the service's body parser (`parse_events`, cvat_analytics/service/ingest.py), timed in
  the ingest phase as serve's per-event work;
- the full working-time refresh, timed once after the bulk load (`refresh_working_time`).
"""
from __future__ import annotations

from .. import working_time
from ..service.ingest import parse_events
from . import statements

__all__ = ["parse_events", "refresh_working_time"]


def refresh_working_time(client, spec: dict) -> dict:
    """Bring the working-time objects up to date with everything loaded; what the refresh reports."""
    result = working_time.refresh(client, spec)
    # The full refresh consumed every change: clear the log, so the service started for
    # the export measures the export, not a re-take of the last minute's changes.
    statements.run(client, "clear_working_time_changes", db=spec["clickhouse"]["database"])
    return result
