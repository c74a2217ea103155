"""Contracts between the services of the rendered Docker stack, checked on the rendered files.

No Vector, Grafana or ClickHouse server runs here, so what each pinned component does where
it meets another was read from its upstream source (cited at each check) and is encoded
below as a check of what `render` wrote. Everything is read back from the rendered files
(compose, users.d, config.d, datasource, dashboards, vector.yaml), never from our templates.
`contract_problems(files)` returns "relpath: what is wrong"; empty means every contract holds.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from .alerts import alerting_problems, alert_queries
from .yaml_load import safe_load

REPO = Path(__file__).resolve().parent.parent
COMPOSE = "docker-compose.yml"
USERS_D = "clickhouse/users.d/"
CONFIG_D = "clickhouse/config.d/"
DATASOURCES = "grafana/provisioning/datasources/"
DASHBOARDS = "grafana/dashboards/"
VECTOR = "vector/vector.yaml"
REFRESH_VIEW = "clickhouse/migrations/0018_working_time_refresh_slots.sql"
# The refresh takes events inserted since its last run minus this margin (queries/working_time.jinja).
COMMIT_MARGIN = re.compile(r"logged - toIntervalSecond\((\d+)\), run_until\) AS run_since")
PLUGIN = "grafana-clickhouse-datasource"

# clickhouse-go v2.47.0 (the driver of grafana/clickhouse-datasource v4.20.0, its go.mod),
# context.go lines 234-240, queryOptions: when the query's context has a deadline more
# than 1 s away it sends `max_execution_time = int(seconds_until_deadline + 5)`. The
# deadline is the datasource's queryTimeout: sqlds v5.3.0 datasource.go line 296 wraps
# each query in context.WithTimeout(settings.Timeout), which the plugin sets from
# jsonData.queryTimeout (pkg/plugin/driver.go line 372; "60" when empty, settings.go
# line 285).
GRAFANA_DRIVER_SLACK_S = 5
GRAFANA_DEFAULT_QUERY_TIMEOUT_S = 60
# Vector 0.54's ClickHouse sink: request.timeout_secs defaults to 60 (Vector's sink docs).
VECTOR_DEFAULT_REQUEST_TIMEOUT_S = 60

# What each pinned image carries for a healthcheck to run, and where that was read.
IMAGE_COMMANDS = {
    "clickhouse/clickhouse-server": (
        {"wget", "clickhouse", "clickhouse-client", "busybox", "sh"},
        "ClickHouse/docker-library server/<version>/Dockerfile.ubuntu: apt-get install wget, "
        "busybox (the image's entrypoint itself probes /ping with wget)"),
    "timberio/vector": (
        {"wget", "vector", "sh", "chown"},
        "vectordotdev/vector distribution/docker/alpine/Dockerfile: FROM alpine:3.23, whose "
        "busybox provides wget, chown and sh (the -alpine tag)"),
    "grafana/grafana": (
        {"wget", "curl", "grafana", "sh", "/run.sh"},
        "grafana/grafana Dockerfile: the 12.x image is Alpine-based (busybox wget, sh), "
        "installs curl, and its entrypoint is /run.sh"),
    "python": (
        {"sh", "python"},
        "docker-library/python <version>/slim-*/Dockerfile: Debian slim (dash as sh), python"),
}

# The system logs ClickHouse 26.9 knows: every name `SYSTEM FLUSH LOGS <name>` accepts on
# chdb 4.4 (ClickHouse 26.9.2.1), probed with every `*_log` string of the engine's binary
# (tests/test_contracts.py re-checks each name on the engine). `latency_log` and
# `instrumentation_trace_log` are not among them.
CLICKHOUSE_SYSTEM_LOGS = {
    # on in the image: each must carry a TTL, or it grows for ever. The sections the default
    # config.xml (ClickHouse programs/server/config.xml) declares uncommented, read in a
    # revision older than 26.9, plus the three logs recent releases add there
    # (background_schedule_pool_log, iceberg_metadata_log, delta_lake_metadata_log; in
    # ClickHouse's server-settings docs). 26.9's own config.xml could not be read here.
    "enabled": ("query_log", "query_thread_log", "query_views_log", "query_metric_log", "part_log",
                "trace_log", "text_log", "metric_log", "asynchronous_metric_log", "error_log",
                "crash_log", "opentelemetry_span_log", "processors_profile_log",
                "asynchronous_insert_log", "backup_log", "s3queue_log", "blob_storage_log",
                "background_schedule_pool_log", "iceberg_metadata_log", "delta_lake_metadata_log"),
    # off unless a config section declares them (declaring one, even for a TTL, turns it on)
    "off": ("session_log", "zookeeper_log", "aggregated_zookeeper_log", "zookeeper_connection_log",
            "transactions_info_log", "filesystem_cache_log", "filesystem_read_prefetches_log",
            "azure_queue_log", "dead_letter_queue", "predicate_statistics_log",
            "bucketed_metric_log", "transposed_metric_log"),
}


def contract_problems(files: dict[str, str]) -> list[str]:
    if COMPOSE not in files:
        return []
    try:
        users = ClickHouseUsers.from_files(files)
        for user in users.users:
            users.grants(user)  # an unreadable grant is a problem here, not a crash later
    except (ET.ParseError, ValueError) as exc:
        return [f"{USERS_D}: cannot read the users: {exc}"]
    return (grafana_timeout_problems(files, users) + grafana_settings_problems(files, users)
            + vector_problems(files, users) + vector_drop_problems(files)
            + dashboard_grant_problems(files, users) + healthcheck_problems(files)
            + clickhouse_health_problems(files) + system_log_problems(files)
            + cvat_override_problems(files, users) + cvat_grafana_problems(files)
            + alerting_problems(files))


# --- ClickHouse users, profiles and grants, as rendered ---------------------------------------

_GRANT = re.compile(r"^\s*GRANT\s+(?P<privs>.+?)\s+ON\s+(?P<db>`[^`]+`|\*|\w+)\.(?P<table>`[^`]+`|\*|\w+)\s*$",
                    re.IGNORECASE)


def _unquote(name: str) -> str:
    return name[1:-1] if name.startswith("`") else name


class ClickHouseUsers:
    """Users and profiles from every rendered users.d file (merged as ClickHouse merges them)."""

    def __init__(self):
        self.users: dict[str, ET.Element] = {}
        self.profiles: dict[str, ET.Element] = {}
        self.where: dict[str, str] = {}

    @classmethod
    def from_files(cls, files: dict[str, str]) -> "ClickHouseUsers":
        found = cls()
        for rel in sorted(r for r in files if r.startswith(USERS_D) and r.endswith(".xml")):
            root = ET.fromstring(files[rel])
            for user in root.findall("users/*"):
                found.users[user.tag] = user
                found.where[user.tag] = rel
            for profile in root.findall("profiles/*"):
                found.profiles[profile.tag] = profile
        return found

    def profile(self, user: str) -> ET.Element:
        """The user's profile; the image's own `default` profile (users.xml) sets nothing
        that matters here, so it reads as an empty one."""
        name = self.users[user].findtext("profile") or "default"
        return self.profiles.get(name, ET.Element(name))

    def grants(self, user: str) -> list[tuple[set[str], str, str]]:
        """(privileges, database, table) per GRANT; '*' is a wildcard."""
        out = []
        for query in self.users[user].findall("grants/query"):
            match = _GRANT.match(query.text or "")
            if not match:
                raise ValueError(f"user {user}: a grant this check cannot read: {query.text!r}")
            # A column-level grant ("SELECT(a, b)") stays as written, so it never counts as the
            # whole table: this check proves table access only.
            privs = {p.strip().upper() for p in re.split(r",(?![^()]*\))", match["privs"])}
            out.append((privs, _unquote(match["db"]), _unquote(match["table"])))
        return out

    def may(self, user: str, privilege: str, database: str, table: str) -> bool:
        return any((privilege in privs or "ALL" in privs)
                   and db in ("*", database) and tbl in ("*", table)
                   for privs, db, tbl in self.grants(user))


def _setting(profile: ET.Element, name: str, default: int) -> int:
    text = profile.findtext(name)
    return int(text) if text not in (None, "") else default


# --- client timeout + driver slack within the server's constraint -----------------------------

def grafana_timeout_problems(files: dict[str, str], users: ClickHouseUsers) -> list[str]:
    problems = []
    for rel, ds in _clickhouse_datasources(files):
        json_data = ds.get("jsonData") or {}
        user = json_data.get("username")
        if user not in users.users:
            problems.append(f"{rel}: datasource {ds.get('name')!r} logs in as {user!r}, a user no users.d file defines")
            continue
        timeout = int(str(json_data.get("queryTimeout") or "").strip() or GRAFANA_DEFAULT_QUERY_TIMEOUT_S)
        if timeout <= 1:
            continue  # no deadline past 1 s: the driver sends no max_execution_time
        sent = timeout + GRAFANA_DRIVER_SLACK_S
        profile = users.profile(user)
        constraint = profile.find("constraints/max_execution_time")
        readonly = _setting(profile, "readonly", 0)
        if readonly and (constraint is None or constraint.find("changeable_in_readonly") is None):
            problems.append(f"{rel}: the plugin's driver sends max_execution_time={sent} with every query, "
                            f"but {user}'s profile {profile.tag} is readonly={readonly} without "
                            "<changeable_in_readonly/> for it: ClickHouse refuses every query")
        if constraint is not None and constraint.findtext("max") not in (None, ""):
            limit = int(constraint.findtext("max"))
            if sent > limit:
                problems.append(
                    f"{rel}: queryTimeout {timeout} s makes the plugin's driver send max_execution_time="
                    f"{sent} (deadline + {GRAFANA_DRIVER_SLACK_S} s, clickhouse-go context.go), above the "
                    f"constraint max {limit} of {user}'s profile {profile.tag}: ClickHouse refuses every "
                    f"query; set queryTimeout to at most {limit - GRAFANA_DRIVER_SLACK_S}")
    return problems


# --- the settings the plugin sends, against a read-only profile --------------------------------

# grafana/clickhouse-datasource v4.20.0 sends, besides max_execution_time above: the datasource's
# jsonData.customSettings and, with jsonData.enableRowLimit, `limit` (pkg/plugin/driver.go lines
# 198-207, clickhouse-go sends them as URL parameters, conn_http.go lines 193-198); and for a
# dashboard with ad hoc filters, ` settings additional_table_filters={...}` after the panel's SQL
# (src/data/adHocFilter.ts line 97). clickhouse-go v2.47.0 sends no other setting over HTTP
# (gzip is an Accept-Encoding header, conn_http_query.go lines 41-48; send_profile_events only
# on WithoutProfileEvents, context.go line 282, which the plugin never calls).
ADHOC_SETTING = "additional_table_filters"


def grafana_settings_problems(files: dict[str, str], users: ClickHouseUsers) -> list[str]:
    """The datasource's user is read-only (readonly=1: every setting a query changes is refused),
    except for exactly the settings the plugin sends, each <changeable_in_readonly/>: one
    missing and its queries fail (every panel, or every ad hoc filter); one more and the
    Grafana user may change what the plugin never needs (least privilege)."""
    problems = []
    for rel, ds in _clickhouse_datasources(files):
        json_data = ds.get("jsonData") or {}
        user = json_data.get("username")
        if user not in users.users:
            continue  # grafana_timeout_problems names it
        profile = users.profile(user)
        where = f"{rel}: datasource {ds.get('name')!r} logs in as {user}, whose profile {profile.tag}"
        if _setting(profile, "readonly", 0) != 1:
            problems.append(f"{where} is readonly={_setting(profile, 'readonly', 0)}: Grafana's user must be "
                            "readonly=1 (0 lets it write, 2 lets it change any setting)")
            continue
        # Ad hoc filters: the rendered dashboards have them, and so may one made in Grafana's UI.
        sent = {"max_execution_time", ADHOC_SETTING}  # max_execution_time's bound: grafana_timeout_problems
        sent |= {str(c.get("setting")) for c in json_data.get("customSettings") or []}
        if json_data.get("enableRowLimit") and json_data.get("rowLimit"):
            sent.add("limit")
        changeable = {c.tag for c in profile.findall("constraints/*") if c.find("changeable_in_readonly") is not None}
        for name in sorted(sent - changeable - {"max_execution_time"}):
            why = "a dashboard's ad hoc filters" if name == ADHOC_SETTING else "jsonData"
            problems.append(f"{where} does not let {name} change in read-only mode, which the plugin sends for "
                            f"{why}: ClickHouse refuses those queries (add <{name}><changeable_in_readonly/>"
                            f"</{name}> to its constraints)")
        for name in sorted(changeable - sent):
            problems.append(f"{where} lets {name} change in read-only mode, which the plugin never sends: "
                            "remove it from the constraints (least privilege)")
    return problems


def _clickhouse_datasources(files: dict[str, str]):
    for rel in sorted(r for r in files if r.startswith(DATASOURCES) and r.endswith((".yaml", ".yml"))):
        for ds in (safe_load(files[rel]) or {}).get("datasources") or []:
            if ds.get("type") == PLUGIN:
                yield rel, ds


def vector_problems(files: dict[str, str], users: ClickHouseUsers) -> list[str]:
    """Vector's INSERT is granted to its user, and ClickHouse gives up on an INSERT before
    Vector's request times out, so a batch Vector retries is never still being written."""
    if VECTOR not in files:
        return []
    problems = []
    config = safe_load(files[VECTOR]) or {}
    for name, sink in (config.get("sinks") or {}).items():
        if sink.get("type") != "clickhouse":
            continue
        user = ((sink.get("auth") or {}).get("user"))
        where = f"{VECTOR}: sinks.{name}"
        if user not in users.users:
            problems.append(f"{where}: logs in as {user!r}, a user no users.d file defines")
            continue
        database, table = sink.get("database") or "default", sink.get("table")
        if not users.may(user, "INSERT", database, table):
            problems.append(f"{where}: runs INSERT INTO {database}.{table}, which {user}'s grants "
                            f"({users.where[user]}) do not allow")
        profile = users.profile(user)
        if _setting(profile, "readonly", 0):
            problems.append(f"{where}: {user}'s profile {profile.tag} is read-only; Vector inserts and "
                            "sends input settings with each INSERT")
        timeout = int(((sink.get("request") or {}).get("timeout_secs")) or VECTOR_DEFAULT_REQUEST_TIMEOUT_S)
        limit = _setting(profile, "max_execution_time", 0)
        if limit == 0 or limit >= timeout:
            shown = "unlimited" if limit == 0 else f"{limit} s"
            problems.append(f"{where}: request timeout {timeout} s, but {user}'s max_execution_time is "
                            f"{shown}: ClickHouse may still be writing a batch Vector has given up on "
                            f"and sends again; keep the server's limit below the request timeout")
        margin = COMMIT_MARGIN.search(files.get(REFRESH_VIEW, ""))
        if margin is None:  # the view moved or its SQL changed: say so, never skip the check
            problems.append(f"{REFRESH_VIEW}: the working-time refresh's commit margin "
                            f"({COMMIT_MARGIN.pattern}) is not there to compare {user}'s max_execution_time with")
        elif limit == 0 or limit >= int(margin.group(1)):
            shown = "unlimited" if limit == 0 else f"{limit} s"
            problems.append(f"{where}: {user}'s max_execution_time is {shown}, but the working-time refresh "
                            f"({REFRESH_VIEW}) takes events inserted up to {margin.group(1)} s before its last "
                            "run: an INSERT running longer can commit rows stamped (inserted_at = the INSERT's "
                            "start) before that and no incremental run counts them")
    return problems


# --- what Vector drops, someone sees ---------------------------------------------------------

# Vector 0.54 (vectordotdev/vector at v0.54.0) retries a ClickHouse answer of 5xx, 408 or 429
# and drops the batch on any other 4xx (src/sinks/util/http.rs l. 570-587, HttpRetryLogic,
# which src/sinks/clickhouse/service.rs l. 59 delegates to; retries.rs l. 174-177); the disk
# buffer deletes a dropped batch like a delivered one (lib/vector-buffers/src/variants/disk_v2/
# ledger.rs l. 704). Neither the clickhouse nor the http sink has a retry option at 0.54
# (only aws_s3's retry_strategy, src/sinks/s3_common/config.rs l. 346). The drop is counted
# (component_discarded_events_total, intentional="false", lib/vector-common/src/
# internal_event/service.rs l. 45-55), so it is seen only through Vector's own metrics.
DROP_COUNTER = "component_discarded_events_total"
ALERTING = "grafana/provisioning/alerting/"
NEWEST_ROW = re.compile(r"\bmax\(\s*timestamp\s*\)", re.IGNORECASE)


def vector_drop_problems(files: dict[str, str]) -> list[str]:
    """For each rendered Vector config, a batch ClickHouse refuses (400, 403, 404), which Vector
    0.54 drops, fires an alert: Vector's internal_metrics reach a ClickHouse table, an alert rule
    counts the drops there, and, when that table is written with the same login as the events
    (a refused password stops both), another rule fires on the table's silence."""
    if not any(r.startswith(ALERTING) for r in files):
        return []  # the cluster render provisions no alert rules (docs/cluster.md says so)
    alerts = [(where, sql) for _, where, sql in alert_queries(files)]
    problems = []
    for rel in (VECTOR, VECTOR_CVAT):
        if rel not in files:
            continue
        config = safe_load(files[rel]) or {}
        sinks = {n: s for n, s in (config.get("sinks") or {}).items() if s.get("type") == "clickhouse"}
        metrics = {n: s for n, s in sinks.items() if "internal_metrics" in _source_types(config, s)}
        events = {n: s for n, s in sinks.items() if n not in metrics}
        if events and not metrics:
            problems.append(f"{rel}: Vector 0.54 drops a batch ClickHouse answers with 400, 403 or 404 "
                            f"(sinks {', '.join(sorted(events))}), and no internal_metrics source reaches a "
                            "ClickHouse sink to count it: nothing would show the loss")
        for name, sink in sorted(metrics.items()):
            table = f"{sink.get('database') or 'default'}.{sink.get('table')}"
            reads = [(where, sql) for where, sql in alerts if _reads(sql, table)]
            if not any(DROP_COUNTER in sql for _, sql in reads):
                problems.append(f"{rel}: sinks.{name} writes Vector's metrics to {table}, but no alert rule counts "
                                f"{DROP_COUNTER} there: a batch Vector drops fires nothing")
            same_login = [n for n, s in events.items() if (s.get("auth") or {}) == (sink.get("auth") or {})]
            if same_login and not any(NEWEST_ROW.search(sql) for _, sql in reads):
                problems.append(f"{rel}: sinks.{name} logs in as sinks {', '.join(sorted(same_login))} do, so a "
                                f"password ClickHouse refuses (403) drops the events and stops the metrics at once, "
                                f"and no alert rule fires on {table} falling silent (the age of its newest row, "
                                "max(timestamp))")
    return problems


def _source_types(config: dict, component: dict, seen: frozenset = frozenset()) -> set[str]:
    """The types of the sources a component's inputs come from, through any transforms."""
    found = set()
    for name in component.get("inputs") or []:
        name = str(name).split(".")[0]  # a transform's named output (`cvat_contract.dropped`)
        if name in seen:
            continue
        if name in (config.get("sources") or {}):
            found.add(config["sources"][name].get("type"))
        elif name in (config.get("transforms") or {}):
            found |= _source_types(config, config["transforms"][name], seen | {name})
    return found


def _reads(sql: str, table: str) -> bool:
    database, name = table.split(".", 1)
    return re.search(rf"\bFROM\s+`?{re.escape(database)}`?\.`?{re.escape(name)}`?(?![\w`])", sql) is not None


# --- every dashboard query reads only what the dashboards user is granted ---------------------

def dashboard_queries(files: dict[str, str]) -> list[tuple[str, str, str]]:
    """(relpath, "panel N"/"variable X", SQL) for every panel target and query variable."""
    out = []
    for rel in sorted(r for r in files if r.startswith(DASHBOARDS) and r.endswith(".json")):
        model = json.loads(files[rel])
        for variable in (model.get("templating") or {}).get("list") or []:
            if variable.get("type") == "query":
                query = variable.get("query")
                sql = query.get("rawSql") if isinstance(query, dict) else query
                if sql:
                    out.append((rel, f"variable {variable.get('name')}", sql))
        for panel in _panels(model.get("panels") or []):
            for target in panel.get("targets") or []:
                if target.get("rawSql"):
                    out.append((rel, f"panel {panel.get('id')} ({panel.get('title')})", target["rawSql"]))
    return out + alert_queries(files)  # Grafana runs the alert rules' SQL as the dashboards user too


def _panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])  # rows keep their panels inside


def dashboard_grant_problems(files: dict[str, str], users: ClickHouseUsers) -> list[str]:
    sources = list(_clickhouse_datasources(files))
    queries = dashboard_queries(files)
    if not sources or not queries:
        return []
    json_data = sources[0][1].get("jsonData") or {}
    user, default_db = json_data.get("username"), json_data.get("defaultDatabase") or "default"
    if user not in users.users:
        return []  # grafana_timeout_problems names it
    problems = []
    for (rel, what, sql), read in zip(queries, tables_read([sql for _, _, sql in queries])):
        if "error" in read:
            problems.append(f"{rel}: {what}: ClickHouse cannot parse it: {read['error']}")
            continue
        ctes = {m.lower() for m in re.findall(r"\b(\w+)\s+AS\s*\(", sql, re.IGNORECASE)}
        for name in read["tables"]:
            if "." not in name and name.lower() in ctes:
                continue
            database, _, table = name.rpartition(".")
            database = _unquote(database or default_db)
            if not users.may(user, "SELECT", database, _unquote(table)):
                problems.append(f"{rel}: {what} reads {database}.{table}, which {user}'s grants "
                                f"({users.where[user]}) do not allow")
        for function in read["table_functions"]:
            if not users.may(user, "CREATE TEMPORARY TABLE", "*", "*"):
                problems.append(f"{rel}: {what} calls the table function {function}(), which needs "
                                f"CREATE TEMPORARY TABLE, not granted to {user}")
    return problems


def tables_read(queries: list[str]) -> list[dict]:
    """The tables each query reads, from ClickHouse's parser on chdb, in a subprocess."""
    run = subprocess.run(
        [sys.executable, "-m", "cvat_analytics_generator.tables_read"], input=json.dumps(queries),
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    if run.returncode != 0:
        detail = (run.stderr.strip().splitlines() or [f"exit code {run.returncode}"])[-1]
        return [{"error": f"the parser could not run: {detail}"}] * len(queries)
    return json.loads(run.stdout)


# --- healthchecks run commands their image has ------------------------------------------------

def healthcheck_problems(files: dict[str, str]) -> list[str]:
    problems = []
    compose = safe_load(files[COMPOSE]) or {}
    for name, service in (compose.get("services") or {}).items():
        test = (service.get("healthcheck") or {}).get("test")
        if not test:
            continue
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        if test[0] == "NONE":
            continue
        command = test[1] if test[0] == "CMD" else "sh"
        problems += _command_problems(f"{COMPOSE}: services.{name}", service, "healthcheck", command)
    return problems


def _command_problems(where: str, service: dict, what: str, command: str) -> list[str]:
    """Whether the service's image carries `command` (IMAGE_COMMANDS, each entry with where
    it was read): the problem, if any."""
    image = _base_image(service)
    repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    known = IMAGE_COMMANDS.get(repository)
    if known is None:
        return [f"{where}: no record of what image {image!r} carries; add it to IMAGE_COMMANDS with where it was read"]
    if command not in known[0]:
        return [f"{where}: the {what} runs {command!r}, which image {image!r} does not have ({known[1]})"]
    return []


# ClickHouse's image entrypoint (ClickHouse docker/server/entrypoint.sh, the same in
# ClickHouse/docker-library server/26.7.3.19/entrypoint.sh lines 178-240): on a new data
# directory it starts a temporary server with `--listen_host=127.0.0.1`, runs
# /docker-entrypoint-initdb.d/*.sql through it, stops it, then starts the real server.
_LOOPBACK = re.compile(r"//(127\.[0-9.]+|localhost|\[::1\])[:/]")


def clickhouse_health_problems(files: dict[str, str]) -> list[str]:
    """ClickHouse is healthy only once the real server listens: its healthcheck must not
    probe loopback, where the init-phase server already answers."""
    compose = safe_load(files[COMPOSE]) or {}
    problems = []
    for name, service in (compose.get("services") or {}).items():
        if not _base_image(service).startswith("clickhouse/clickhouse-server"):
            continue
        test = (service.get("healthcheck") or {}).get("test") or []
        text = " ".join(test) if isinstance(test, list) else str(test)
        if _LOOPBACK.search(text):
            problems.append(f"{COMPOSE}: services.{name}: the healthcheck probes loopback, where the "
                            "image's init-phase server (--listen_host=127.0.0.1) answers too: the "
                            "service is reported healthy while the init scripts still run")
    return problems


def _base_image(service: dict) -> str:
    """The image a service runs: for one built from an inline Dockerfile, its FROM."""
    inline = (service.get("build") or {}).get("dockerfile_inline")
    if inline:
        froms = re.findall(r"^\s*FROM\s+(\S+)", inline, re.MULTILINE)
        if froms:
            return froms[-1].replace("$$", "$")
    return service.get("image") or ""


# --- every system log of the pinned ClickHouse has a TTL, none is switched on by accident -----

def system_log_problems(files: dict[str, str]) -> list[str]:
    problems = []
    declared: dict[str, tuple[str, ET.Element]] = {}
    for rel in sorted(r for r in files if r.startswith(CONFIG_D) and r.endswith(".xml")):
        for element in ET.fromstring(files[rel]):
            if element.tag.endswith("_log") or element.tag == "dead_letter_queue":
                declared[element.tag] = (rel, element)
    known = set(CLICKHOUSE_SYSTEM_LOGS["enabled"]) | set(CLICKHOUSE_SYSTEM_LOGS["off"])
    for name in CLICKHOUSE_SYSTEM_LOGS["enabled"]:
        if name not in declared:
            problems.append(f"{CONFIG_D}: system.{name} (on in the image) has no TTL: it grows for ever")
            continue
        rel, element = declared[name]
        ttl = (element.findtext("ttl") or "").upper()
        engine = (element.findtext("engine") or "").upper()
        if "INTERVAL" not in ttl and not ("TTL" in engine and "INTERVAL" in engine):
            problems.append(f"{rel}: system.{name} is declared without a TTL")
    for name, (rel, _) in sorted(declared.items()):
        if name in CLICKHOUSE_SYSTEM_LOGS["off"]:
            problems.append(f"{rel}: <{name}> switches on system.{name}, which the image leaves off")
        elif name not in known:
            problems.append(f"{rel}: <{name}> is not a system log of the pinned ClickHouse")
    return problems


# --- the same contracts on the services the CVAT override puts into CVAT's stack ---------------

OVERRIDE = "cvat-compose.override.yml"
VECTOR_CVAT = "vector/vector-cvat.yaml"


def cvat_override_problems(files: dict[str, str], users: ClickHouseUsers) -> list[str]:
    """What holds for the standalone stack holds for the override: its healthchecks and
    entrypoints run commands their images have, ClickHouse's healthcheck does not probe
    loopback, its Vector (vector-cvat.yaml) may INSERT and gives up after ClickHouse does;
    and CVAT's own services log in as a users.d user that may read the events, with the
    password ClickHouse gives that user."""
    if OVERRIDE not in files:
        return []
    from .validate import parse_yaml  # reads compose's !override/!reset; validate imports this module
    compose = parse_yaml(files[OVERRIDE]) or {}
    services = compose.get("services") or {}
    # The standalone checks, run on the override as if it were the standalone file.
    as_standalone = {**files, COMPOSE: yaml.safe_dump(compose)}
    problems = [_in_override(p, COMPOSE, OVERRIDE)
                for p in healthcheck_problems(as_standalone) + clickhouse_health_problems(as_standalone)]
    if VECTOR_CVAT in files:
        problems += [_in_override(p, VECTOR, VECTOR_CVAT)
                     for p in vector_problems({**files, VECTOR: files[VECTOR_CVAT]}, users)]
    return problems + _override_entrypoint_problems(services) + _override_login_problems(services, users)


def _in_override(problem: str, standalone: str, override: str) -> str:
    return override + problem[len(standalone):] if problem.startswith(standalone) else problem


def _override_entrypoint_problems(services: dict) -> list[str]:
    problems = []
    for name, service in services.items():
        entrypoint = service.get("entrypoint")
        if not entrypoint or not (service.get("image") or service.get("build")):
            continue  # CVAT's own services: only environment and depends_on are set here
        command = entrypoint[0] if isinstance(entrypoint, list) else str(entrypoint).split()[0]
        problems += _command_problems(f"{OVERRIDE}: services.{name}", service, "entrypoint", command)
    return problems


def _override_login_problems(services: dict, users: ClickHouseUsers) -> list[str]:
    """CVAT's services log in with CLICKHOUSE_USER/PASSWORD/DB (cvat/settings/base.py) and
    read `events` for the export: a users.d user, its password from the env variable the
    override gives ClickHouse, its grants covering that read. The image's own admin
    (ClickHouse's CLICKHOUSE_USER, which migrate uses too) is not a users.d user."""
    clickhouse = [s for s in services.values() if _base_image(s).startswith("clickhouse/clickhouse-server")]
    server_env = (clickhouse[0].get("environment") or {}) if clickhouse else {}
    problems = []
    for name, service in services.items():
        env = service.get("environment") or {}
        if not isinstance(env, dict) or env.get("CLICKHOUSE_USER") in (None, server_env.get("CLICKHOUSE_USER")):
            continue
        user = env["CLICKHOUSE_USER"]
        where = f"{OVERRIDE}: services.{name}"
        if user not in users.users:
            problems.append(f"{where}: logs in to ClickHouse as {user!r}, a user no users.d file defines")
            continue
        password = users.users[user].find("password")
        variable = password.get("from_env") if password is not None else None
        if variable is None or _variable(server_env.get(variable)) != _variable(env.get("CLICKHOUSE_PASSWORD")):
            problems.append(f"{where}: CLICKHOUSE_PASSWORD is not what ClickHouse gives {user} "
                            f"({users.where[user]}: from_env={variable!r})")
        database = env.get("CLICKHOUSE_DB") or "default"
        if not users.may(user, "SELECT", database, "events"):
            problems.append(f"{where}: CVAT's export reads {database}.events as {user}, which its grants "
                            f"({users.where[user]}) do not allow")
    return problems


def _variable(value) -> str | None:
    """The variable a compose value is read from (`${NAME:?message}` -> NAME), else the value."""
    match = re.match(r"\$\{(\w+)", str(value)) if value is not None else None
    return match.group(1) if match else value


# --- Grafana behind CVAT's Traefik -------------------------------------------------------------
# CVAT's Traefik route to Grafana (components/analytics/grafana_conf.yml, the same in every
# release 2.22-2.73) forwards with `passHostHeader: false`: Grafana gets Host grafana:3000
# (its upstream, DJANGO_LOG_VIEWER_HOST:PORT) while the browser's Origin names CVAT_HOST.
# What Grafana 12.4 does with that was read from grafana/grafana:
#   pkg/middleware/csrf/csrf.go @ d6b85077 (the CSRF filter; reimplemented below),
#   pkg/services/authn/authnimpl/registration.go @ 0100361f (which sign-ins exist),
#   conf/defaults.ini: [auth] login_cookie_name = grafana_session.

GRAFANA_LOGIN_COOKIE = "grafana_session"
SAMPLE_CVAT_HOST = "cvat.example"  # any name CVAT_HOST may hold; the browser adds CVAT's port


def grafana_csrf_refusal(env: dict, *, host: str, origin: str, method: str = "POST",
                         cookies: tuple[str, ...] = (), headers: dict | None = None) -> str | None:
    """Why Grafana's CSRF filter refuses this request, or None when it lets it through:
    CSRF.check() of csrf.go, line by line, with the settings ProvideCSRFFilter reads
    (:38-40, from the environment as GF_SECURITY_*). Note what it never reads: the root URL."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    additional = str(env.get("GF_SECURITY_CSRF_ADDITIONAL_HEADERS") or "").split()
    trusted = str(env.get("GF_SECURITY_CSRF_TRUSTED_ORIGINS") or "").split()
    skip_without_cookie = str(env.get("GF_SECURITY_CSRF_SKIP_CHECK_IF_LOGIN_COOKIE_NOT_PRESENT", "true")).lower() != "false"
    if skip_without_cookie and GRAFANA_LOGIN_COOKIE not in cookies:  # :76-81
        return None
    if method in ("HEAD", "OPTIONS", "TRACE"):  # :74, :83-88
        return None
    server_host = _split_host(host)  # :96, the port ignored
    if origin == "":  # :101-106, the Origin header
        return None
    origin_host = _split_host(urllib.parse.urlsplit(origin).netloc.rpartition("@")[2])  # :108-112, Go's Hostname(): no port, case kept
    trusted_origin = any(_split_host(headers.get(h.lower(), "")) == origin_host for h in additional)  # :115-125
    trusted_origin = trusted_origin or origin_host in trusted  # :127-132, exact: a bare host name
    if server_host == "" or (not trusted_origin and origin_host != server_host):  # :134-136
        return f"403 origin not allowed (Origin {origin_host!r}, Host {server_host!r})"
    return None


def _split_host(value: str) -> str:
    """util.SplitHostPortDefault's host: without the port, IPv6 without brackets."""
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def grafana_signs_in(env: dict) -> bool:
    """Whether anyone can sign in and so hold a session cookie: the form client is registered
    unless the login form is disabled (registration.go:78-80); basic auth (:74-76) checks
    each request and creates no session."""
    return str(env.get("GF_AUTH_DISABLE_LOGIN_FORM", "false")).lower() != "true"


def cvat_grafana_problems(files: dict[str, str]) -> list[str]:
    """The override's Grafana behind CVAT's Traefik: a signed-in user's POSTs (queries, saves)
    pass Grafana's CSRF check with Host grafana:<port> and CVAT_HOST's Origin, or no one
    can sign in at all; the Authorization header of CVAT's clients is never tried as a
    Grafana password; and no dashboards provider reads CVAT's dashboards folder (its stock
    files carry our uids)."""
    if OVERRIDE not in files:
        return []
    from .validate import parse_yaml
    services = (parse_yaml(files[OVERRIDE]) or {}).get("services") or {}
    named = [(n, s) for n, s in services.items() if "grafana" in _cvat_aliases(s)]
    if not named:
        return [f"{OVERRIDE}: no service answers as grafana on CVAT's network, where CVAT's Traefik sends /analytics"]
    name, grafana = named[0]
    where = f"{OVERRIDE}: services.{name}.environment"
    problems = []
    for cvat_host in (SAMPLE_CVAT_HOST, None):  # CVAT's .env names a host, or CVAT's default
        variables = {"CVAT_HOST": cvat_host} if cvat_host else {}
        env = {k: _interpolate(v, variables) for k, v in (grafana.get("environment") or {}).items()}
        browser_host = cvat_host or "localhost"
        upstream = f"grafana:{env.get('GF_SERVER_HTTP_PORT') or 3000}"
        if grafana_signs_in(env):
            refusal = grafana_csrf_refusal(env, host=upstream, origin=f"http://{browser_host}:8080",
                                           cookies=(GRAFANA_LOGIN_COOKIE,))
            if refusal:
                problems.append(f"{where}: with CVAT_HOST={browser_host}, a signed-in user's POST (a query, "
                                f"a save) through CVAT's Traefik (Host {upstream}) is refused by Grafana's "
                                f"CSRF check (csrf.go:134-136): {refusal}; trust CVAT_HOST "
                                "(GF_SECURITY_CSRF_TRUSTED_ORIGINS, a bare host name) or disable the login form")
        if (str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "true"
                and str(env.get("GF_AUTH_BASIC_ENABLED", "true")).lower() != "false"):
            problems.append(f"{where}: anonymous access with basic auth on: the Authorization header of "
                            "CVAT's clients, which CVAT's Traefik passes on, is tried as a password of "
                            "Grafana's users (registration.go:74-76, with its login-attempt lockout) before "
                            "the visitor falls through to anonymous; set GF_AUTH_BASIC_ENABLED to false, "
                            "as CVAT does")
    return problems + _cvat_dashboards_provider_problems(files, grafana, name)


def _cvat_aliases(service: dict) -> list[str]:
    networks = service.get("networks") or {}
    return ((networks.get("cvat") or {}).get("aliases") or []) if isinstance(networks, dict) else []


def _interpolate(value, variables: dict) -> str:
    """A compose value as Compose interpolates it: ${NAME}, ${NAME:-default}, ${NAME-default},
    ${NAME:?message} (here: empty), $$ -> $."""
    def one(match: re.Match) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        got = variables.get(name)
        if op in (":-", "-") and (got is None or (op == ":-" and got == "")):
            return arg
        return got or ""
    text = re.sub(r"\$\{(?P<name>\w+)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}", one, str(value))
    return text.replace("$$", "$")


# CVAT's dashboards folder holds CVAT's stock dashboards, whose uids (EIGSTDAVz, w0if6WAVz,
# WvDvWK04k, user-exceptions) are ours too. Two providers of one uid make Grafana take database
# writes away from both (pkg/services/provisioning/dashboards/validator.go @ 417bdf53,
# takeAwayWritePermissions :112-130; file_reader.go saveDashboard: "Not saving new dashboard
# due to restricted database access"): a render's change would never reach Grafana. So that
# folder is not a provider here: what differs from CVAT's stock files is imported
# (`cvat-analytics dashboards import --from-cvat`), see CVAT_STOCK_DASHBOARDS.
CVAT_DASHBOARDS = "components/analytics/grafana/dashboards"

# The git blob id (`git hash-object`) of every dashboard file CVAT released from 2.22.0 to 2.73.0,
# read at each release's "Prepare release" commit (tests/fixtures/cvat/README.md says where).
CVAT_STOCK_DASHBOARDS = {
    "all_events.json": {"d1e98ba40816ad04102855fe33dbb0d8dbda1267": "2.22.0-2.39.x",
                        "100983785e272c1308f8e7deac627b778ee5b2f3": "2.40.0-2.73.0"},
    "management.json": {"fdba30147949bce101f69f164f8f27256fc718c1": "2.22.0-2.39.x",
                        "37a45425bb2df7ff8ef470f98aa346a59c8d231c": "2.40.0-2.73.0"},
    "monitoring.json": {"ea54db995382dc98bfe638dcc01aa7d2c2d56443": "2.22.0-2.39.x",
                        "6fb2db799074becbf5cccb78d360a50a6c07f4d3": "2.40.0-2.55.x",
                        "9b55efe6471defc4b46c6d5675fd127b3c737f7f": "2.56.0-2.64.x",
                        "426ac56ef09f7b639549379a60ee747688c92999": "2.65.0-2.73.0"},
    "users_exceptions.json": {"5fcc92ef19a78d4a3f93062eea8c686060133f79": "2.65.0-2.69.x",
                              "0c47e31f281d0a69c72cd02841c3bfe52efdf6e9": "2.70.0-2.73.0"},
}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id


def cvat_dashboard_changes(cvat_dir: Path) -> list[Path]:
    """The dashboards in a CVAT checkout's dashboards folder that no CVAT release shipped:
    the ones an administrator edited (or added) there, to import."""
    folder = Path(cvat_dir) / CVAT_DASHBOARDS
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (give the directory of CVAT's checkout)")
    stock = {blob for blobs in CVAT_STOCK_DASHBOARDS.values() for blob in blobs}
    # A stock file under any name is stock; so is one a Windows checkout gave CRLF line ends.
    return [path for path in sorted(folder.rglob("*.json"))
            if not {git_blob_id(path.read_bytes()), git_blob_id(path.read_bytes().replace(b"\r\n", b"\n"))} & stock]


def _cvat_dashboards_provider_problems(files: dict[str, str], grafana: dict, name: str) -> list[str]:
    """No provider may read a folder mounted from CVAT's dashboards folder (see above)."""
    mounts = {}  # target -> source, the variables interpolated first (their messages hold colons)
    for volume in grafana.get("volumes") or []:
        source, target = (_interpolate(volume, {"CVAT_ANALYTICS_DEPLOY": "/deploy"}).split(":") + [""])[:2]
        mounts[target.rstrip("/")] = source
    problems = []
    for rel in sorted(r for r in files if r.startswith("grafana/provisioning/dashboards/") and r.endswith((".yaml", ".yml"))):
        for provider in (safe_load(files[rel]) or {}).get("providers") or []:
            path = str((provider.get("options") or {}).get("path") or "").rstrip("/")
            under = [t for t in mounts if path == t or path.startswith(t + "/")]
            source = mounts[max(under, key=len)] if under else ""  # the innermost mount is what it reads
            if CVAT_DASHBOARDS in source.replace("\\", "/"):
                problems.append(f"{rel}: provider {provider.get('name')!r} reads {path}, mounted from CVAT's "
                                f"{CVAT_DASHBOARDS} (services.{name} in {OVERRIDE}): its stock files carry our "
                                "dashboards' uids, and Grafana then saves no dashboard of either provider "
                                "(validator.go:112-130); import CVAT's changed files instead "
                                "(cvat-analytics dashboards import --from-cvat)")
    return problems


# --- the override against the CVAT checkout it was adopted into (`check --cvat`) ----------------

# The override names the CVAT release it was rendered for in a top-level extension field,
# which Compose ignores (x- keys, compose-spec "Extension").
RELEASE_FIELD = "x-cvat-analytics"


def override_release(text: str) -> str | None:
    """The CVAT release a rendered override was rendered for (None if it does not say)."""
    from .validate import parse_yaml
    try:
        compose = parse_yaml(text) or {}
    except yaml.YAMLError:
        return None
    field = compose.get(RELEASE_FIELD) if isinstance(compose, dict) else None
    return str(field.get("cvat_version")) if isinstance(field, dict) and field.get("cvat_version") else None


def cvat_checkout_problems(override_text: str, override_path: str, checkout_release: str, env_path: str,
                           listed: list[str], wanted: list[str], fix: str) -> list[str]:
    """A CVAT upgrade replaces CVAT's compose file, and a plain `docker compose up` loads
    only what COMPOSE_FILE lists: the override must be rendered for the checkout's release
    (the port CVAT's backends send to changes at 2.44, the grants CVAT's DDL needs at 2.45
    and 2.48) and COMPOSE_FILE must list every file CVAT is started with and ours last
    (`wanted`, absolute paths like `listed`), or CVAT's ClickHouse 23.11 starts on a volume
    ours has upgraded, or the user's own override is left out."""
    problems = []
    rendered = override_release(override_text)
    if rendered != checkout_release:
        problems.append(f"{override_path}: rendered for CVAT {rendered or '(no release named)'}, but the "
                        f"checkout is CVAT {checkout_release}; run `{fix}`")
    *theirs, ours = wanted
    if ours not in listed:
        problems.append(f"{env_path}: COMPOSE_FILE does not list {ours}, so a plain `docker compose up` "
                        f"starts CVAT's own analytics services on the adopted volume; run `{fix}`")
    for path in theirs:
        if path not in listed:
            problems.append(f"{env_path}: COMPOSE_FILE does not list {path}, which Compose loads only when "
                            f"COMPOSE_FILE is not set; run `{fix}`")
    return problems
