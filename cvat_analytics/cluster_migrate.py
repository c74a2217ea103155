"""`migrate` on a cluster: the statements to send, per server, and sending them.

The same migrations and ledger rules as one server (migrate.py: applied once, `-- reapply:
on-change` ones again when their text changes, drift refused), over the cluster's schema
(generator/templates/cluster/). Connected to one server, the plan routes each statement
(generator/cluster_ddl.py): DDL on that server, which the Replicated database carries to every
replica of every shard; CREATE DATABASE ON CLUSTER; a data step (INSERT) on one replica of each
shard, after it has replayed the database's log. A migration is recorded in every shard's
ledger once all its steps ran, so the ledger read over the shards (any shard's row counts) never
shows a migration whose data step some shard missed. The shard count the data is sharded with is
a ledger row: a spec with another count is refused (users would move to other shards and their
working time would be split) unless the data was re-sharded as docs/cluster.md says.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlparse

from clickhouse_connect.driver.client import Client

from cvat_analytics_generator import cluster_ddl
from cvat_analytics_generator.render import CLUSTER_NAME, INIT_LEDGER, INIT_LEDGER_TEMPLATE, render_template
from cvat_analytics_generator.sql import SqlFile, SqlTemplateError, parse

from . import retention
from .errors import first_line
from .store import chdb_path, connect, redact
from .migrate import migrations, pending_migrations
from .retention import RETENTION_MIGRATION

QUERIES = "clickhouse/runtime/cluster_migrate.sql.j2"
_LEDGER_ROW = re.compile(r"\('([^']*)', '([^']*)'\)")  # a row of the ledger's INSERT (names and hex: no quotes)
_CREATE_DISTRIBUTED = re.compile(r"CREATE TABLE IF NOT EXISTS `[^`]+`\.`?(\w+)`?\s*\(.*\)\s*ENGINE\s*=\s*Distributed\(",
                                 re.S)
ANY = "any server"


class ClusterMigrateError(Exception):
    """The cluster cannot be migrated as asked (a shard unreachable, a chdb DSN, ...)."""


class ShardCountChanged(ClusterMigrateError):
    """The spec's shard count differs from the one the cluster's data is sharded with."""


@dataclass
class State:
    """What the plan depends on, read from the cluster (or empty: a new cluster)."""
    applied: dict[str, str] = field(default_factory=dict)  # ledger: name -> latest checksum
    ttl_days: int | None = None  # the retention TTL of events_local now


@dataclass(frozen=True)
class Step:
    node: str    # ANY, or "shard N": one replica of shard N
    sql: str
    source: str  # the migration it belongs to, or the ledger row it writes
    kind: str    # "schema" (DDL), "data" (a data step), "sync" (before data on a shard), "ledger"


def shard(n: int) -> str:
    return f"shard {n}"


def queries(spec: dict) -> SqlFile:
    return parse(render_template(spec, QUERIES), QUERIES)


def ledger_insert(spec: dict, rows: list[tuple[str, str]]) -> str:
    """One INSERT of ledger rows: the init scripts' own statement (INIT_LEDGER_TEMPLATE)."""
    text = render_template(spec, INIT_LEDGER_TEMPLATE, migrations=[{"name": n, "checksum": c} for n, c in rows])
    return parse(text, INIT_LEDGER_TEMPLATE).statements[0].sql


def plan(spec: dict, state: State, resharded: bool = False, k8s: bool = False) -> list[Step]:
    """Every statement to send, in order, each with the server it goes to. Raises
    MigrationDrift or ShardCountChanged before anything is planned."""
    shards = spec["clickhouse"]["cluster"]["shards"]
    row, count = cluster_ddl.shards_ledger_row(spec)
    recorded = state.applied.get(row)
    if recorded is not None and recorded != count and not resharded:
        raise ShardCountChanged(
            f"the cluster's data is sharded over {recorded} shards (its ledger, {spec['clickhouse']['database']}"
            f".schema_migrations) and the spec now says {count} (clickhouse.cluster.shards): each user's events "
            f"would go to another shard and their working time would be split. Keep {recorded} shards, or "
            "re-shard the data as docs/cluster.md (\"migrate on a cluster\", re-sharding) says and run "
            "migrate --resharded")
    every = migrations(spec, k8s=k8s)
    pending, renoted = pending_migrations(every, state.applied)
    spread = _distributed_tables(every)
    sync = queries(spec).named("sync")
    steps: list[Step] = []
    synced: set[int] = set()  # shards whose replica replayed the log since the last DDL

    def one_server(sql: str, source: str) -> None:
        steps.append(Step(ANY, sql, source, "schema"))
        synced.clear()

    def every_shard(sql: str, source: str, kind: str) -> None:
        for n in range(1, shards + 1):
            if n not in synced:
                steps.append(Step(shard(n), sync, source, "sync"))
                synced.add(n)
            steps.append(Step(shard(n), sql, source, kind))

    for m in pending:
        if m.name == RETENTION_MIGRATION and spec["clickhouse"]["retention_days"] <= 0 and state.ttl_days is not None:
            one_server(queries(spec).named("remove_ttl"), m.name)
        for statement in m.parsed.statements:
            to = cluster_ddl.route(statement.sql, f"{m.template}:{statement.line}")
            if to == cluster_ddl.ON_CLUSTER:
                one_server(cluster_ddl.on_cluster(statement.sql, CLUSTER_NAME), m.name)
            elif to == cluster_ddl.ONE_SERVER:
                one_server(statement.sql, m.name)
            else:
                _refuse_spread_reads(statement.sql, spread, f"{m.template}:{statement.line}")
                every_shard(statement.sql, m.name, "data")
        # Once every step of it ran, on every shard (see the docstring): a run stopped later
        # does not run it again (0012's MATERIALIZE would restamp every row).
        every_shard(ledger_insert(spec, [(m.name, m.checksum)]), m.name, "ledger")
    rows = [(m.name, m.checksum) for m in renoted] + ([(row, count)] if recorded != count else [])
    if rows:
        every_shard(ledger_insert(spec, rows), "ledger", "ledger")
    return steps


def _distributed_tables(ms) -> set[str]:
    """The tables the migrations create as Distributed (a read or write of one spans every shard)."""
    return {match[1] for m in ms for st in m.parsed.statements
            if (match := _CREATE_DISTRIBUTED.match(st.sql))}


def _refuse_spread_reads(sql: str, spread: set[str], where: str) -> None:
    """A data step runs once per shard: through a Distributed table it would read or write
    every shard each time (the rows N times over). It names the _local tables."""
    for table in sorted(spread):
        if re.search(rf"\.`?{re.escape(table)}`?(?![\w`])", sql):
            raise SqlTemplateError(f"{where}: a data step (INSERT, run on each shard) names {table}, a Distributed "
                                   f"table over every shard; name the shard's own table ({table}_local)")


def fresh_plan(spec: dict, k8s: bool = False) -> list[Step]:
    """The plan for a new cluster (nothing applied)."""
    return plan(spec, State(), k8s=k8s)


def describe(steps: list[Step]) -> str:
    """The plan as `migrate --dry-run` prints it: each statement under the server it goes to."""
    if not steps:
        return "-- nothing to apply\n"
    out, last = [], None
    for step in steps:
        if (step.node, step.source) != last:
            where = ("any one server (the Replicated database carries it to every server)" if step.node == ANY
                     else f"one replica of {step.node}")
            out.append(f"-- {step.source}: on {where}")
            last = (step.node, step.source)
        out.append(step.sql.rstrip(";") + ";")
    return "\n".join(out) + "\n"


def read_state(client: Client, spec: dict) -> State:
    """The ledger over every shard and the TTL in force; empty on a cluster without the schema."""
    sql = queries(spec)
    if not int(client.command(sql.named("exists"))):
        return State()
    params = {"database": spec["clickhouse"]["database"]}
    applied = dict(client.query(sql.named("applied")).result_rows)
    rows = client.query(sql.named("ttl"), parameters=params).result_rows
    match = retention._TTL_DAYS.search(rows[0][0]) if rows else None
    return State(applied, int(match.group(1)) if match else None)


def _check_retention(client: Client, spec: dict, state: State, steps: list[Step], assume_yes: bool, log) -> None:
    """As on one server (retention.py): a new TTL that would drop stored events needs --yes."""
    days = spec["clickhouse"]["retention_days"]
    if not any(s.source == RETENTION_MIGRATION for s in steps) or days <= 0:
        return
    if state.ttl_days is not None and state.ttl_days <= days:
        return
    events = int(client.command(queries(spec).named("would_drop"), parameters={"days": days}))
    if not events:
        return
    what = f"a retention of {days} days drops {events} events older than {days} days from every shard's events_local"
    if not assume_yes:
        raise retention.RetentionRefused(f"refused: {what}; run migrate --yes to accept, or change the retention in the spec")
    log(f"{what}: accepted (--yes)")


def shard_hosts(client: Client, spec: dict) -> dict[int, list[str]]:
    """Each shard's replicas by host name, as the connected server's remote_servers lists them."""
    hosts: dict[int, list[str]] = {}
    for n, host in client.query(queries(spec).named("shard_hosts")).result_rows:
        hosts.setdefault(int(n), []).append(host)
    return hosts


def migrate_cluster(client: Client, spec: dict, connect_shard: Callable[[int], Client], log=print,
                    assume_yes: bool = False, resharded: bool = False, dry_run: bool = False,
                    k8s: bool = False) -> list[Step]:
    """Plan against the cluster's ledger, then send each step to its server: `client` for
    ANY, connect_shard(n) for shard n. Returns the steps (sent, or with dry_run printed)."""
    state = read_state(client, spec)
    steps = plan(spec, state, resharded=resharded, k8s=k8s)
    if dry_run:
        log(describe(steps).rstrip("\n"))
        return steps
    _check_retention(client, spec, state, steps, assume_yes, log)
    for n, step in enumerate(steps):
        target = client if step.node == ANY else connect_shard(int(step.node.removeprefix("shard ")))
        target.command(step.sql)
        if step.kind == "ledger":
            log(f"recorded in {step.node}'s ledger")
        elif n + 1 == len(steps) or steps[n + 1].source != step.source:
            log(f"applied {step.source}")
    if not steps:
        log(f"nothing to apply: {len(state.applied)} ledger rows already recorded")
    return steps


def require_server(dsn: str) -> None:
    """A cluster is migrated through one of its servers, never the embedded store."""
    if chdb_path(dsn) is not None:
        raise ClusterMigrateError(f"the spec renders a ClickHouse cluster; {redact(dsn)} is the embedded store: "
                                  "give --dsn http://user@host:8123 of one of the cluster's servers")


def shard_connector(dsn: str, client: Client, spec: dict, overrides: list[str]) -> Callable[[int], Client]:
    """connect_shard for migrate_cluster: shard N at its `--shard-dsn N=DSN`, else the first of
    its replicas (remote_servers' host names) that answers, with `dsn`'s scheme, port and user."""
    given: dict[int, str] = {}
    for item in overrides:
        n, sep, shard_dsn = item.partition("=")
        if not (sep and n.isdigit() and 1 <= int(n) <= spec["clickhouse"]["cluster"]["shards"]):
            raise ClusterMigrateError(f"--shard-dsn {n!r}=...: expected N=DSN with N a shard number "
                                      f"from 1 to clickhouse.cluster.shards ({spec['clickhouse']['cluster']['shards']})")
        given[int(n)] = shard_dsn

    def connect_shard(n: int) -> Client:
        if n in given:
            return connect(given[n])
        tried = []
        for host in shard_hosts(client, spec).get(n, []):
            parsed = urlparse(dsn)
            userinfo = parsed.netloc.rpartition("@")[0]
            netloc = (userinfo + "@" if userinfo else "") + host + (f":{parsed.port}" if parsed.port else "")
            try:
                shard_client = connect(parsed._replace(netloc=netloc).geturl())
                shard_client.command("SELECT 1")
                return shard_client
            except Exception as exc:  # the next replica of the shard, then the error naming them all
                tried.append(f"{host}: {first_line(exc)}")
        raise ClusterMigrateError(f"no replica of shard {n} answers ({'; '.join(tried) or 'none listed'}): give "
                                  f"--shard-dsn {n}=http://user@host:port for one of them")
    return connect_shard


def ledger_rows(steps: list[Step], node: str) -> list[tuple[str, str]]:
    """The (name, checksum) rows the plan records in one node's ledger, in order."""
    return [row for s in steps if s.kind == "ledger" and s.node == node for row in _LEDGER_ROW.findall(s.sql)]


def init_statements(files: dict[str, str]) -> list[str]:
    """What a new cluster's first server runs on its first start: every statement of the
    rendered clickhouse/migrations/*.sql (the migrations, then the init ledger), in name order."""
    return [s.sql for rel in sorted(files) if rel.startswith("clickhouse/migrations/") and rel.endswith(".sql")
            for s in parse(files[rel], rel, options={"reapply"}).statements]


def plan_problems(spec: dict, files: dict[str, str]) -> list[str]:
    """What `check` proves of migrate's plan for a new cluster: it sends what the init scripts
    run (one source of truth; CREATE DATABASE ON CLUSTER, a data step and the ledger on every
    shard, each shard synced first), and every statement it sends or reads with parses on
    ClickHouse (formatQuery: chdb cannot run them, having no cluster)."""
    from cvat_analytics_generator.validate import sql_problems

    steps = fresh_plan(spec)
    sent = [s.sql for s in steps if s.kind in ("schema", "data") and s.node in (ANY, shard(1))]
    *init, init_ledger = init_statements(files)
    expected = [cluster_ddl.on_cluster(sql, CLUSTER_NAME) if cluster_ddl.route(sql, "init") == cluster_ddl.ON_CLUSTER
                else sql for sql in init]
    problems = []
    if sent != expected:
        n = next((i for i, (a, b) in enumerate(zip(sent, expected)) if a != b), min(len(sent), len(expected)))
        problems.append(f"migrate's plan for a new cluster is not what the init scripts (clickhouse/migrations/) run: "
                        f"statement {n + 1} of {len(expected)} differs")
    if ledger_rows(steps, shard(1)) != _LEDGER_ROW.findall(init_ledger):
        problems.append("migrate's ledger rows for a new cluster are not the ones the init scripts record "
                        f"({INIT_LEDGER}: rendered from the same migrations)")
    per_node: dict[str, list[str]] = {}
    for step in steps:
        per_node.setdefault(step.node, []).append(step.sql.rstrip(";"))
    plan_files = {f"migrate-plan/{node.replace(' ', '-')}.sql": ";\n\n".join(sqls) + ";\n" for node, sqls in per_node.items()}
    plan_files["migrate-plan/reads.sql"] = render_template(spec, QUERIES)  # what it asks before it plans
    return problems + sql_problems(plan_files, parse_only=True)
