"""The bulk load: chunk files into our schema, the same rows into CVAT's, storage measured."""
from __future__ import annotations

import time
from pathlib import Path

from .. import working_time
from ..migrate import migrate
from ..progress import Progress
from ..store import open_handle
from . import statements
from .generate import chunk_path
from .measure import open_store, ts_text
from .runtime import refresh_after_new_events, refresh_productivity, refresh_working_time
from .statements import CVAT_DB

EXPORT_ROWS = 1_000_000  # rows in the timed CSV export


def phase_load(cfg: dict) -> dict:
    """Bulk-load the chunk files into our schema, copy into CVAT's, settle, measure storage;
    pick the panels' user and job and the export window."""
    spec, client = open_store(cfg)
    db = spec["clickhouse"]["database"]
    migrate(client, spec, log=lambda *_: None)
    statements.run(client, "create_database", db=CVAT_DB)
    statements.run(client, "cvat_events", db=CVAT_DB)
    chunks = Path(cfg["workdir"]) / "chunks"
    started = time.monotonic()
    index = 0
    with Progress("load", total=cfg["n"]) as progress:
        while True:
            path = chunk_path(chunks, index)
            done = chunks / "DONE"
            if not path.exists():
                if done.exists() and index >= int(done.read_text()):
                    break
                time.sleep(0.2)  # the generator is still writing it
                continue
            statements.run(client, "load_chunk", db=db, path=str(path))
            path.unlink()
            index += 1
            progress.update(int(statements.run(client, "count_events", db=db)))
    load_s = time.monotonic() - started
    margin_wait_s = working_time.wait_past_commit_margin(client, spec)  # see refresh_working_time
    t = time.monotonic()
    handle = open_handle(cfg["dsn"])  # the refreshes' runs are watched on it (runtime.RunWatcher)
    refresh = refresh_working_time(client, spec, handle)
    refresh_s = time.monotonic() - t
    # 1,000 more events, as a live install gets them; every later figure sees them too.
    incremental = refresh_after_new_events(client, spec)
    # the productivity state: a full recompute (its scheduled runs took the load already), then a
    # run after 1,000 new server events
    productivity_full = refresh_productivity(client, spec, full=True)
    productivity_incremental = refresh_productivity(client, spec, new_server_events=True)
    t = time.monotonic()
    statements.run(client, "copy_events", from_db=db, to_db=CVAT_DB)
    copy_s = time.monotonic() - t
    t = time.monotonic()
    for database in (db, CVAT_DB):
        statements.run(client, "optimize_events", db=database)
    optimize_s = time.monotonic() - t

    def disk(database: str, table: str) -> tuple[int, int]:
        return statements.rows(client, "table_disk", db=database, table=table)[0]

    ours_bytes, ours_rows = disk(db, "events")
    cvat_bytes, cvat_rows = disk(CVAT_DB, "events")
    wt_bytes = sum(disk(db, t)[0] for t in ("working_time_totals", "working_time_checkpoints"))
    user_id, job_id = statements.rows(client, "busiest_user_and_job", db=db,
                                      t_from=ts_text(cfg["now_ms"] - 7 * 86_400_000))[0]
    export_from = statements.rows(client, "export_window_start", db=db, rows=EXPORT_ROWS)[0][0]
    return {"events": ours_rows, "cvat_events": cvat_rows, "load_s": load_s, "copy_s": copy_s,
            "margin_wait_s": margin_wait_s, "refresh_s": refresh_s, "refresh": refresh,
            "incremental_refresh": incremental, "productivity_full_refresh": productivity_full,
            "productivity_refresh": productivity_incremental,
            "optimize_s": optimize_s,
            "ours_bytes": ours_bytes, "cvat_bytes": cvat_bytes, "working_time_bytes": wt_bytes,
            "user_id": user_id, "job_id": job_id, "export_from": export_from,
            "export_to": ts_text(cfg["now_ms"] + 86_400_000)}
