"""Working time (docs/architecture.md, Working time): query-time totals, waiting for the refresh that
keeps <db>.working_time_totals exact, and the executable-UDF setup for chdb.

The engine keeps the totals current itself (the refreshable view working_time_refresh,
migration 0017; 0013 created it before).
The SQL lives in generator/templates/clickhouse/; this module renders it from the
spec and runs it with bound parameters only.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import cvat_analytics_udf

from cvat_analytics_generator.render import context, environment

from cvat_analytics_generator.sql import split_statements

from . import times

UDF_SCRIPT = Path(cvat_analytics_udf.__file__).with_name("working_time.py")
UDF_CONFIG = "clickhouse/user_defined/working_time_function.xml.j2"
BY_CHOICES = ("user", "project", "task", "job", "day", "hour")
EPOCH = "1970-01-01 00:00:00.000"
FAR_FUTURE = "2299-12-31 23:59:59.999"


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
        return times.sql_text(times.parse_utc(text))
    except ValueError:
        raise WorkingTimeError(f"not an ISO-8601 time: {text!r} (e.g. 2024-01-01T12:00:00Z)") from None


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


def wait_current(client, spec: dict, timeout_s: float = 60) -> None:
    """Return once working_time_totals counts every event committed before the call.

    Starts refreshes of the views that keep them current (they run inside the engine,
    see migration 0018) until one that started after this call has finished and no full
    recompute is midway (it takes a bucket of users per run). Raises WorkingTimeError
    with the refresh's error once a run after the call has failed and it backs off."""
    statements = split_statements(render(spec, "clickhouse/queries/working_time_wait.sql.j2"))
    now, *refresh_and_wait, done = statements  # the plan's run, the applying run, productivity's
    since = client.query(now).result_rows[0][0]
    deadline = time.monotonic() + timeout_s
    while True:
        for statement in refresh_and_wait:
            client.command(statement)  # a WAIT raises the refresh's error, if it failed
        current, failures, error = client.query(done, parameters={"since": since}).result_rows[0]
        if current:
            return
        if failures:  # failed since the call, and backing off: the next runs wait
            raise WorkingTimeError(f"the working-time refresh failed {failures} time(s) in a row: {error}")
        if time.monotonic() > deadline:
            raise WorkingTimeError(f"working_time_totals not refreshed within {timeout_s} s")
        time.sleep(0.2)


def refresh_once_the_engine_is_up(client, spec: dict) -> None:
    """Start one run of each refresh out of schedule, once the run in progress (if any) has ended.

    chdb starts each refreshable view as a process opens the store, sometimes before it has
    attached system.view_refreshes, which the plan reads: that run fails (UNKNOWN_TABLE) and the
    next one is an interval away, up to an hour (seen: serve's totals still empty 120 s after it
    started, with refresh_interval_s 3600). `serve` calls this once the store is open. The
    statements are the wait template's `startup` form; the last refresh is started, not waited for."""
    for statement in split_statements(render(spec, "clickhouse/queries/working_time_wait.sql.j2", startup=True)):
        try:
            client.command(statement)
        except Exception:  # a WAIT raises a failed run's error: the next run records it
            if not statement.lstrip().upper().startswith("SYSTEM WAIT"):
                raise


def wait_past_commit_margin(client, spec: dict) -> float:
    """Sleep until every event stored before the call is older than the refresh's commit
    margin, and return the seconds slept. A refresh started after that is the last one to
    take those events: the runs after it take only what is inserted later."""
    seconds = float(client.command(render(spec, "clickhouse/runtime/working_time_margin.sql.j2")))
    time.sleep(seconds)
    return seconds


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
    sql = split_statements(environment().get_template("clickhouse/queries/working_time_udf_available.sql.j2").render())[0]
    return bool(client.query(sql).result_rows[0][0])
