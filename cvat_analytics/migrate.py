"""Apply the rendered migrations in order, once each, and record them.

A migration is applied when its name is not in <db>.schema_migrations. One whose
first line is `-- reapply: on-change` holds spec values that may change later
(retention, dedup window); it is applied again whenever its text changes.
Every statement is idempotent, so a migration interrupted halfway can be re-run.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from cvat_analytics_generator.render import render_sql

from . import retention

REAPPLY_MARK = "-- reapply: on-change"


@dataclass
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def reapply_on_change(self) -> bool:
        return self.sql.startswith(REAPPLY_MARK)

    def statements(self) -> list[str]:
        return split_statements(self.sql)


def split_statements(sql: str) -> list[str]:
    """Statements of a file; each ends with `;` at the end of a line (our templates' style)."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def migrations(spec: dict) -> list[Migration]:
    files = render_sql(spec, "clickhouse/migrations")
    return [Migration(name.removesuffix(".sql"), files[name]) for name in sorted(files)]


def applied(client: Client, database: str) -> dict[str, str]:
    """name -> checksum of the latest application of each recorded migration."""
    exists = client.command("EXISTS TABLE {db:Identifier}.schema_migrations", parameters={"db": database})
    if not int(exists):
        return {}
    rows = client.query(
        "SELECT name, argMax(checksum, applied_at) FROM {db:Identifier}.schema_migrations GROUP BY name",
        parameters={"db": database},
    ).result_rows
    return dict(rows)


def migrate(client: Client, spec: dict, log=print, assume_yes: bool = False) -> list[str]:
    """Apply what is pending; return the names applied (empty on a second run).
    A TTL that would drop stored events needs `assume_yes` (see retention.py)."""
    spec = retention.effective_spec(client, spec)
    database = spec["clickhouse"]["database"]
    done = applied(client, database)
    ran = []
    for m in migrations(spec):
        if m.name in done and (done[m.name] == m.checksum or not m.reapply_on_change):
            continue
        if m.name == retention.RETENTION_MIGRATION:
            retention.before_retention_migration(client, spec, assume_yes, log)
        for statement in m.statements():
            client.command(statement)
        client.command(
            "INSERT INTO {db:Identifier}.schema_migrations (name, checksum) VALUES ({n:String}, {c:String})",
            parameters={"db": database, "n": m.name, "c": m.checksum},
        )
        log(f"applied {m.name}")
        ran.append(m.name)
    if not ran:
        log(f"nothing to apply: {len(done)} migrations already applied")
    return ran
