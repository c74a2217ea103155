"""Ingest's baselines: the engine's own insert rate of the same rows (the ceiling), on our schema,
on CVAT's, and coalesced by async_insert; and serve's per-event validation rate on one core."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

from ..migrate import copy_schema, migrate
from ..store import INSERT_SETTINGS, connect, insert_json_rows, open_handle
from . import statements
from .generate import read_bodies

SENDERS = 4  # concurrent senders (HTTP connections, engine handles)
BULK_ROWS = 100_000
SCHEMA = "ceiling_schema"  # migrated once; each timed database copies it


def _validate_rate(cfg: dict) -> float:
    """Events/s through serve's per-event work on one core: decode, check and encode the body
    (service.ingest.BodyDecoder: what each request does under the GIL before it is grouped)."""
    from cvat_analytics_generator.spec import load_spec

    from ..events import EventContract
    from ..service.ingest import BodyDecoder

    decoder = BodyDecoder(EventContract(load_spec(Path(cfg["spec"]))))
    bodies = read_bodies(Path(cfg["workdir"]) / "bodies_1000.bin")[:100]
    t, n = time.monotonic(), 0
    for body in bodies:
        n += len(decoder.decode(body)[0])
    return n / max(time.monotonic() - t, 1e-9)


def _batches(lines: list[bytes], rows: int) -> list[bytes]:
    return [b"".join(lines[i:i + rows]) for i in range(0, len(lines), rows)]


def _fresh_schema(client, base: dict, database: str) -> None:
    """`database` with our schema as migrate leaves it, without the refreshable views: they are
    not on the insert path, and each would run as it is created and on its schedule, taking
    the CPU the inserts are timed on. The first is migrated (SCHEMA), the rest copy it."""
    if not int(client.command("SELECT count() FROM system.databases WHERE name = {db:String}",
                              parameters={"db": SCHEMA})):
        spec = json.loads(json.dumps(base))
        spec["clickhouse"]["database"] = SCHEMA
        migrate(client, spec, log=lambda *_: None)
        for (view,) in client.query("SELECT view FROM system.view_refreshes WHERE database = {db:String}",
                                    parameters={"db": SCHEMA}).result_rows:
            client.command(f"SYSTEM STOP VIEW `{SCHEMA}`.`{view}`")
    copy_schema(client, SCHEMA, database, refreshable=False)


def _insert_rate(client, base: dict, database: str, batches: list[bytes]) -> dict:
    """The engine's own rate for these INSERTs into a fresh database of our schema (fsync on)."""
    _fresh_schema(client, base, database)
    t = time.monotonic()
    for body in batches:
        insert_json_rows(client, database, body)
    elapsed = time.monotonic() - t
    stored = int(statements.run(client, "count_events", db=database))
    return {"events": stored, "seconds": elapsed, "rate": stored / elapsed}


def phase_ceiling(cfg: dict) -> dict:
    """The engine's own insert rate of the ingest sample through clickhouse-connect,
    one insert per batch of 100 / 1000 stored rows, into a freshly migrated database."""
    from cvat_analytics_generator.spec import load_spec

    base = load_spec(Path(cfg["spec"]))
    client = connect(cfg["dsn"])
    lines = (Path(cfg["workdir"]) / "rows.jsonl").read_bytes().splitlines(keepends=True)
    out = {"validate_rate": _validate_rate(cfg),  # and the bulk ceiling: 100,000-row INSERTs
           "bulk": _insert_rate(client, base, "ceiling_bulk", _batches(lines, BULK_ROWS))}
    for size, count in cfg["ingest"].items():
        size = int(size)
        batches = _batches(lines[:count], size)
        out[str(size)] = _insert_rate(client, base, f"ceiling_{size}", batches)
        stored = out[str(size)]["events"]
        # ... and in INSERTs of SENDERS bodies: the largest group SENDERS closed-loop senders can
        # form (each waits for its answer before it sends again), so the engine's rate for
        # exactly what group commit can give it.
        out[str(size)]["group_rate"] = _insert_rate(client, base, f"group_{size}",
                                                    _batches(lines[:count], SENDERS * size))["rate"]
        # For the report: the same inserts into CVAT's schema (no MV, no indexes, no fsync) ...
        cvat = f"cvat_{size}"
        statements.run(client, "create_database", db=cvat)
        statements.run(client, "cvat_events", db=cvat)
        t = time.monotonic()
        for body in batches:
            insert_json_rows(client, cvat, body)
        out[str(size)]["cvat_schema_rate"] = stored / (time.monotonic() - t)
        # ... and into our schema from SENDERS concurrent handles with async_insert (the engine
        # coalesces concurrent inserts into one part; each keeps its own deduplication token).
        _fresh_schema(client, base, f"coalesced_{size}")
        out[str(size)]["coalesced_rate"] = _coalesced_rate(cfg["dsn"], f"coalesced_{size}", batches)
    return out


def _coalesced_rate(dsn: str, database: str, batches: list[bytes]) -> float:
    handles = [open_handle(dsn) for _ in range(SENDERS)]
    work = iter(batches)
    lock = threading.Lock()

    def worker(handle):
        while True:
            with lock:
                body = next(work, None)
            if body is None:
                return
            settings = dict(INSERT_SETTINGS, async_insert=1, wait_for_async_insert=1,
                            async_insert_busy_timeout_max_ms=50,
                            insert_deduplication_token=hashlib.sha256(body).hexdigest())
            handle.raw_insert(f"`{database}`.events", None, body, settings=settings, fmt="JSONEachRow")

    threads = [threading.Thread(target=worker, args=(h,)) for h in handles]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - t
    return int(statements.run(handles[0], "count_events", db=database)) / elapsed
