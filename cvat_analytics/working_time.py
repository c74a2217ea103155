"""Working time (DESIGN.md §6): query-time totals, the refresh step that keeps
<db>.working_time_totals exact, and the executable-UDF setup for chdb.

The SQL lives in generator/templates/clickhouse/queries/working_time*.j2; this
module renders it from the spec and runs it with bound parameters only.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import cvat_analytics_udf

from cvat_analytics_generator.render import context, environment

UDF_SCRIPT = Path(cvat_analytics_udf.__file__).with_name("working_time.py")
UDF_CONFIG = "clickhouse/user_defined/working_time_function.xml.j2"
BY_CHOICES = ("user", "project", "task", "job", "day", "hour")
EPOCH = "1970-01-01 00:00:00.000"
FAR_FUTURE = "2299-12-31 23:59:59.999"
# An insert is picked up by the refresh that starts after its insert trigger ran, and by
# every refresh for COMMIT_MARGIN_S after that: an insert that takes that long to commit
# is still counted. Refreshes are idempotent, so taking a change twice costs only time.
COMMIT_MARGIN_S = 60
# working_time_changes keeps rows 7 days (its TTL); a refresh that finds its last
# watermark older than this recomputes everything instead.
CHANGES_KEPT_S = 6 * 24 * 3600


class WorkingTimeError(Exception):
    """A working-time request that cannot be served, worded for the user."""


def render(spec: dict, template: str, **extra) -> str:
    return environment().get_template(template).render({**context(spec), **extra})


def _engine(spec: dict, engine: str | None) -> str:
    engine = engine or spec["working_time"]["engine"]
    if engine not in ("sql", "udf"):
        raise WorkingTimeError(f"unknown engine {engine!r}; expected sql or udf")
    return engine


def _settings(engine: str) -> dict:
    # Single-level aggregation hands the UDF all users of a block in one call, instead
    # of one call per two-level bucket (measured: 28 s -> 1.6 s on 1M events).
    return {"group_by_two_level_threshold": 0} if engine == "udf" else {}


def parse_time(text: str | None, default: str) -> str:
    """An ISO-8601 time (naive = UTC) as 'YYYY-MM-DD HH:MM:SS.mmm' UTC."""
    if not text:
        return default
    try:
        value = dt.datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise WorkingTimeError(f"not an ISO-8601 time: {text!r} (e.g. 2024-01-01T12:00:00Z)") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def parse_by(text: str) -> list[str]:
    """`user,project,task,job[,day|hour]` -> column names, in the order given."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in BY_CHOICES]
    if bad or not parts:
        raise WorkingTimeError(f"--by takes a list of {', '.join(BY_CHOICES)}; got {text!r}")
    if "day" in parts and "hour" in parts:
        raise WorkingTimeError("--by takes day or hour, not both")
    if len(set(parts)) != len(parts):
        raise WorkingTimeError(f"--by names a column twice: {text!r}")
    return [p if p in ("day", "hour") else f"{p}_id" for p in parts]


def totals(client, spec: dict, by: list[str], *, user_id=None, project_id=None, task_id=None,
           job_id=None, from_ts: str | None = None, to_ts: str | None = None,
           engine: str | None = None):
    """(columns, rows): working time per `by`, computed from the raw events now."""
    engine = _engine(spec, engine)
    sql = render(spec, "clickhouse/queries/working_time_totals.sql.j2", engine=engine, by=by)
    params = {
        "user_id": user_id, "project_id": project_id, "task_id": task_id, "job_id": job_id,
        "from_ts": parse_time(from_ts, EPOCH), "to_ts": parse_time(to_ts, FAR_FUTURE),
    }
    result = client.query(sql, parameters=params, settings=_settings(engine))
    return list(result.column_names), result.result_rows


def per_event(client, spec: dict, engine: str | None = None):
    """Every client event with the ms it adds and the ids it credits (for tests and checks)."""
    engine = _engine(spec, engine)
    sql = render(spec, "clickhouse/queries/working_time_events.sql.j2", engine=engine)
    result = client.query(sql, settings=_settings(engine))
    return list(result.column_names), result.result_rows


def rule_signature(spec: dict) -> str:
    """What the totals depend on besides the events: a change forces a full recompute."""
    wt = spec["working_time"]
    text = json.dumps([wt["idle_threshold_ms"], sorted(wt["collapsed_scopes"])])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _steps(sql: str) -> list[str]:
    """The statements of the refresh template, in order (each follows a `-- step:` line)."""
    chunks = re.split(r"^-- step: \w+\n", sql, flags=re.M)[1:]
    body = ["\n".join(line for line in c.splitlines() if not line.lstrip().startswith("--"))
            for c in chunks]
    return [b.strip().rstrip(";") for b in body if b.strip()]


def refresh(client, spec: dict, *, full: bool = False, engine: str | None = None,
            margin_s: int = COMMIT_MARGIN_S) -> dict:
    """Bring <db>.working_time_totals up to date; return what it did.

    Recomputes, per user with new client events, the hours from that user's earliest
    new event on, starting from the checkpoint before it; writes new-minus-stored
    deltas. Idempotent: running it twice changes nothing the second time. One
    refresh at a time (serve runs it in one loop)."""
    engine = _engine(spec, engine)
    db = spec["clickhouse"]["database"]
    started = time.monotonic()
    until = client.query("SELECT toString(now64(6, 'UTC'))").result_rows[0][0]
    last = client.query(
        "SELECT toString(watermark), rule, dateDiff('second', watermark, now64(6, 'UTC')) "
        "FROM {db:Identifier}.working_time_refresh_log ORDER BY refreshed_at DESC LIMIT 1",
        parameters={"db": db}).result_rows
    rule = rule_signature(spec)
    if not last or last[0][1] != rule or last[0][2] > CHANGES_KEPT_S:
        full = True  # first refresh, a changed rule, or changes older than their TTL
    since = EPOCH if full or not last else last[0][0]
    params = {"since": since, "until": until, "full": int(full),
              "version": int(dt.datetime.fromisoformat(until).replace(tzinfo=dt.timezone.utc).timestamp() * 1e6)}
    if not full:
        params["since"] = client.query(
            "SELECT toString({w:DateTime64(6, 'UTC')} - toIntervalSecond({m:UInt32}))",
            parameters={"w": since, "m": margin_s}).result_rows[0][0]
    for statement in _steps(render(spec, "clickhouse/queries/working_time_refresh.sql.j2", engine=engine)):
        client.command(statement, parameters=params, settings=_settings(engine))
    users, events = client.query(
        "SELECT (SELECT count() FROM {db:Identifier}.working_time_stage_users),"
        " (SELECT count() FROM {db:Identifier}.working_time_stage)", parameters={"db": db}).result_rows[0]
    elapsed_ms = int((time.monotonic() - started) * 1000)
    client.command(
        "INSERT INTO {db:Identifier}.working_time_refresh_log VALUES (now64(6, 'UTC'), "
        "{w:DateTime64(6, 'UTC')}, {r:String}, {f:UInt8}, {u:UInt64}, {e:UInt64}, {ms:UInt64})",
        parameters={"db": db, "w": until, "r": rule, "f": int(full), "u": users, "e": events, "ms": elapsed_ms})
    return {"full": full, "users": users, "events": events, "elapsed_ms": elapsed_ms, "watermark": until}


def write_udf_dir(spec: dict, directory: Path, udf_type: str = "executable_pool") -> Path:
    """A directory chdb can take as `udf_path`: the rendered XML config and the script."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    xml = render(spec, UDF_CONFIG, udf_type=udf_type)
    (directory / "working_time_function.xml").write_text(xml, encoding="utf-8")
    script = directory / "working_time.py"
    shutil.copy2(UDF_SCRIPT, script)
    # ClickHouse runs only an executable script, and pip installs a wheel's modules without the bit.
    script.chmod(script.stat().st_mode | 0o111)
    return directory


def connect_with_udf(dsn: str, spec: dict):
    """A client whose engine has the working_time_ms UDF loaded.

    A server loads it from its config. chdb takes `udf_path` only when the process
    first opens its engine, so for a chdb DSN this must be the process's first open."""
    import clickhouse_connect

    from . import store

    path = store.chdb_path(dsn)
    if path is None:
        return store.connect(dsn)
    path = path.resolve()
    holder = store.lock_holder(path)
    if holder is not None:
        raise store.StoreError(f"the chdb data at {path} is in use by process {holder}; "
                               "stop it first, or use --engine sql through its HTTP service")
    udf_dir = write_udf_dir(spec, path.parent / f".{path.name}.udf")
    path.mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=f"chdb://{path}", chdb_options={"udf_path": str(udf_dir)})


def udf_available(client) -> bool:
    return bool(int(client.command("SELECT count() FROM system.functions WHERE name = 'working_time_ms'")))
