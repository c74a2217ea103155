"""Apply the rendered migrations in order, once each, and record them.

A migration is applied when its name is not in <db>.schema_migrations. One whose
first line is the option `-- reapply: on-change` holds spec values that may change
later (retention, dedup window); it is applied again whenever its statements change.
Any other applied migration whose statements changed is drift: migrate refuses to
run (MigrationDrift) rather than leave the database behind the spec silently.
Every statement is idempotent, so a migration interrupted halfway can be re-run.
On CVAT's own events table, 0012's rewrite of every part is replaced by a record of
where CVAT's history ends (adopt_history): adopting years of events writes no part.
The file format is the renderer's SQL template convention (cvat_analytics_generator.sql).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property

from clickhouse_connect.driver.client import Client

from cvat_analytics_generator.render import INIT_LEDGER, is_cluster, render_sql, render_template
from cvat_analytics_generator.sql import SqlFile, SqlTemplateError, checksum, parse

from . import retention

FOLDER = "clickhouse/migrations"
LEDGER = "clickhouse/runtime/schema_migrations.sql.j2"
ADOPTION = "clickhouse/runtime/events_adoption.sql.j2"
# 0012's statement that stamps the stored rows by rewriting every part (a mutation).
STAMP_STORED_ROWS = ("0012_events_inserted_at", "stamp_stored_rows")
# 0028's statement that indexes the parts stored (a mutation): on CVAT's adopted table,
# whose parts migrate leaves as they are, skipped (its parts get the index as they merge).
INDEX_STORED_PARTS = ("0028_events_id_value_indexes", "index_stored_parts")


class MigrationDrift(Exception):
    """An applied migration's statements changed: the database no longer matches the spec."""


class ClusterSpec(Exception):
    """The spec renders a ClickHouse cluster, whose schema cluster_migrate.py applies."""


@dataclass
class Migration:
    name: str
    sql: str
    prefix: str = ""  # "cluster/": a migration of the cluster's schema

    @property
    def template(self) -> str:
        return f"generator/templates/{self.prefix}{FOLDER}/{self.name}.sql.j2"

    @cached_property
    def parsed(self) -> SqlFile:
        parsed = parse(self.sql, self.template, options={"reapply"})
        if parsed.options.get("reapply", "on-change") != "on-change":
            raise SqlTemplateError(f"{self.template}:1: reapply takes on-change, "
                                   f"not {parsed.options['reapply']!r}")
        return parsed

    @property
    def statements(self) -> list[str]:
        return [s.sql for s in self.parsed.statements]

    @property
    def checksum(self) -> str:
        """Of what runs: a comment edited in the template is not a change to the database."""
        return checksum(self.statements)

    @property
    def text_checksum(self) -> str:
        """Of the whole text: what versions before the statement checksum recorded."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def reapply_on_change(self) -> bool:
        return "reapply" in self.parsed.options


def migrations(spec: dict, k8s: bool = False) -> list[Migration]:
    """The spec's migrations in order; with k8s, the cluster's whatever the layout."""
    files = render_sql(spec, FOLDER, k8s=k8s)
    files.pop(INIT_LEDGER.removeprefix(FOLDER + "/"), None)  # the init scripts' ledger, not a migration
    prefix = "cluster/" if k8s or is_cluster(spec) else ""
    return [Migration(name.removesuffix(".sql"), files[name], prefix) for name in sorted(files)]


def ledger(spec: dict) -> SqlFile:
    return parse(render_template(spec, LEDGER), LEDGER)


def applied(client: Client, spec: dict) -> dict[str, str]:
    """name -> checksum of the latest application of each recorded migration."""
    sql = ledger(spec)
    if not int(client.command(sql.named("exists"))):
        return {}
    return dict(client.query(sql.named("applied")).result_rows)


def is_adopted(client: Client, spec: dict) -> bool:
    """Whether <db>.events is CVAT's own table holding rows (adopted, not made by 0002)."""
    return bool(int(client.command(parse(render_template(spec, ADOPTION, block=0), ADOPTION).named("adopted_history"))))


def adopt_history(client: Client, spec: dict, log=print) -> bool:
    """On CVAT's events table with rows, instead of 0012's rewrite: keep each row's block
    number through merges and record the last block stored now, below which the refresh
    takes no row as new (docs/cvat-stack.md, "Adopting CVAT's history"). Metadata only.
    Returns False, doing nothing, on any other table (0012's rewrite of it runs)."""
    if not is_adopted(client, spec):
        return False
    sql = parse(render_template(spec, ADOPTION, block=0), ADOPTION)
    client.command(sql.named("stop_earlier_rewrite"))
    client.command(sql.named("keep_block_numbers"))
    block = int(client.command(sql.named("last_block")))
    client.command(parse(render_template(spec, ADOPTION, block=block), ADOPTION).named("record_boundary"))
    log(f"adopted CVAT's events up to block {block} as they are (no part rewritten)")
    return True


def pending_migrations(ms: list[Migration], done: dict[str, str]) -> tuple[list[Migration], list[Migration]]:
    """(the migrations to apply, those recorded with their old text checksum: to note anew).
    Raises MigrationDrift if an applied migration not marked to re-apply changed."""
    pending, renoted = [], []
    for m in ms:
        recorded = done.get(m.name)
        if recorded == m.checksum:
            continue
        if recorded == m.text_checksum:
            renoted.append(m)
            continue
        if recorded is not None and not m.reapply_on_change:
            raise MigrationDrift(
                f"{m.template} was applied with a different text than the spec renders now, and it is "
                "not marked `-- reapply: on-change`, so the change would never reach the database. "
                "Restore the spec value (or template) that changed it, or leave this migration as it "
                "was and write the change as a new migration.")
        pending.append(m)
    return pending, renoted


def migrate(client: Client, spec: dict, log=print, assume_yes: bool = False) -> list[str]:
    """Apply what is pending; return the names applied (empty on a second run).
    Raises MigrationDrift, before applying anything, if an applied migration changed.
    A TTL that would drop stored events needs `assume_yes` (see retention.py)."""
    if is_cluster(spec):
        cluster = spec["clickhouse"]["cluster"]
        raise ClusterSpec(f"the spec renders a ClickHouse cluster (clickhouse.cluster: {cluster['shards']} shards "
                          f"x {cluster['replicas']} replicas): its schema is applied per server by "
                          "cluster_migrate.migrate_cluster (docs/cluster.md); this applies the single server's")
    spec = retention.effective_spec(client, spec)
    sql = ledger(spec)
    done = applied(client, spec)

    def record(m: Migration) -> None:
        client.command(sql.named("record"), parameters={"name": m.name, "checksum": m.checksum})

    pending, renoted = pending_migrations(migrations(spec), done)
    for m in renoted:
        record(m)  # same text, recorded the old way: note it the new way, apply nothing
    for m in pending:
        if m.name == retention.RETENTION_MIGRATION:
            retention.before_retention_migration(client, spec, assume_yes, log)
        for statement in m.parsed.statements:
            if (m.name, statement.name) == STAMP_STORED_ROWS and adopt_history(client, spec, log):
                continue
            if (m.name, statement.name) == INDEX_STORED_PARTS and is_adopted(client, spec):
                continue
            client.command(statement.sql)
        record(m)
        log(f"applied {m.name}")
    if not pending:
        log(f"nothing to apply: {len(done)} migrations already applied")
    return [m.name for m in pending]


def create_in_order(client: Client, statements: list[str]) -> list[int]:
    """Run CREATE statements until each has worked (a materialized view after the table it
    writes to): rounds over those that failed. Returns their indexes in the order they ran."""
    order, pending = [], list(range(len(statements)))
    while pending:
        failed = []
        for i in pending:
            try:
                client.command(statements[i])
                order.append(i)
            except Exception:  # its dependency comes later: try again in the next round
                failed.append(i)
        if len(failed) == len(pending):
            raise RuntimeError(f"cannot create {len(failed)} objects, the first: {statements[failed[0]][:200]}")
        pending = failed
    return order


def copy_schema(client: Client, source: str, target: str, refreshable: bool = True) -> None:
    """`target` made with the tables and views `source` holds (not a refresh's table in flight;
    without its refreshable views unless `refreshable`), each created once what it needs is
    there. Without the rows and the ledger: for a database made and thrown away (the bench's,
    the tests')."""
    client.command(f"CREATE DATABASE `{target}`")
    create_in_order(client, schema_ddl(client, source, target, "all" if refreshable else "stored"))


def copy_refreshable_views(client: Client, source: str, target: str) -> None:
    """The refreshable views of `source` made in `target` (copied without them), each starting
    its run at creation: after the rows they read are there, that run is the one needed."""
    create_in_order(client, schema_ddl(client, source, target, "refreshable"))


def schema_ddl(client: Client, source: str, target: str, which: str) -> list[str]:
    """The CREATE statements of `source`'s objects (`which`: all, stored (not the refreshable
    views and the plain views of their queries, `<view>_query`), refreshable), naming `target`:
    tables, then views, then materialized views, the refreshable last, so few are tried before
    what they need (a refreshable view's failed try costs its analysis)."""
    refreshing = ("name IN (SELECT arrayJoin([view, view || '_query']) FROM system.view_refreshes "
                  "WHERE database = {db:String})")
    where = {"all": "1", "stored": f"NOT {refreshing}", "refreshable": refreshing}[which]
    rows = client.query("SELECT name, create_table_query FROM system.tables WHERE database = {db:String} "
                        f"AND NOT startsWith(name, '.tmp') AND {where}", parameters={"db": source}).result_rows

    def rank(ddl: str) -> int:
        return next((i for i, kind in enumerate(("CREATE TABLE", "CREATE VIEW", "CREATE MATERIALIZED VIEW \\S+ TO "))
                     if re.match(kind, ddl)), 3)
    return [re.sub(rf"\b{re.escape(source)}\b", target, ddl)
            for _, ddl in sorted(rows, key=lambda row: (rank(row[1]), row[0]))]
