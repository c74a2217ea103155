"""Contracts between the services of the rendered Docker stack, checked on the rendered files.

No Vector, Grafana or ClickHouse server runs here, so what each pinned component does where
it meets another was read from its upstream source (cited at each check) and is encoded
below as a check of what `render` wrote. Everything is read back from the rendered files
(compose, users.d, config.d, datasource, dashboards, vector.yaml), never from our templates.
`contract_problems(files)` returns "relpath: what is wrong"; empty means every contract holds.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = "docker-compose.yml"
USERS_D = "clickhouse/users.d/"
CONFIG_D = "clickhouse/config.d/"
DATASOURCES = "grafana/provisioning/datasources/"
DASHBOARDS = "grafana/dashboards/"
VECTOR = "vector/vector.yaml"
REFRESH_VIEW = "clickhouse/migrations/0013_working_time_refresh.sql"
# The refresh takes events inserted since its last run minus this margin (queries/working_time.jinja).
COMMIT_MARGIN = re.compile(r"toIntervalSecond\((\d+)\) AS run_since")
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
    return (grafana_timeout_problems(files, users) + vector_problems(files, users)
            + dashboard_grant_problems(files, users) + healthcheck_problems(files)
            + clickhouse_health_problems(files) + system_log_problems(files)
            + cvat_override_problems(files, users))


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


def _clickhouse_datasources(files: dict[str, str]):
    for rel in sorted(r for r in files if r.startswith(DATASOURCES) and r.endswith((".yaml", ".yml"))):
        for ds in (yaml.safe_load(files[rel]) or {}).get("datasources") or []:
            if ds.get("type") == PLUGIN:
                yield rel, ds


def vector_problems(files: dict[str, str], users: ClickHouseUsers) -> list[str]:
    """Vector's INSERT is granted to its user, and ClickHouse gives up on an INSERT before
    Vector's request times out, so a batch Vector retries is never still being written."""
    if VECTOR not in files:
        return []
    problems = []
    config = yaml.safe_load(files[VECTOR]) or {}
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
        if margin and (limit == 0 or limit >= int(margin.group(1))):
            shown = "unlimited" if limit == 0 else f"{limit} s"
            problems.append(f"{where}: {user}'s max_execution_time is {shown}, but the working-time refresh "
                            f"({REFRESH_VIEW}) takes events inserted up to {margin.group(1)} s before its last "
                            "run: an INSERT running longer can commit rows stamped (inserted_at = the INSERT's "
                            "start) before that and no incremental run counts them")
    return problems


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
    return out


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
    compose = yaml.safe_load(files[COMPOSE]) or {}
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
    compose = yaml.safe_load(files[COMPOSE]) or {}
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
