"""Where each statement of the cluster's migrations runs (docs/cluster.md, "migrate on a cluster").

The database is `Replicated`: a DDL statement run on any one server reaches every replica of
every shard through the database's log in Keeper (ClickHouse, src/Databases/DatabaseReplicated.cpp,
shouldReplicateQuery: CREATE/DROP/RENAME of a table, and every ALTER when the cluster has more
than one shard; with one shard a mutation or partition ALTER is carried by the table's own
replication instead). What it does not carry:

- CREATE DATABASE: the database is what carries the rest, so it is created ON CLUSTER (every
  server listed in remote_servers), as the Kubernetes Job does;
- INSERT: a write to a shard's local table reaches that shard's replicas only, so a data step
  runs on one replica of every shard, after that replica has replayed the database's log
  (SYSTEM SYNC DATABASE REPLICA), so the tables the step writes exist there.

Anything else in a cluster migration is refused: a statement kind added later gets its route
here, by decision, not by default. The shard count the data was sharded with is kept in the
ledger as one more row (SHARDS_ROW): the init scripts write it, `migrate` compares it.
"""
from __future__ import annotations

import re

from .sql import SqlTemplateError

# Routes.
ON_CLUSTER = "on cluster"      # one statement, ON CLUSTER, from any one server
ONE_SERVER = "one server"      # any one server; the Replicated database carries it
EVERY_SHARD = "every shard"    # one replica of each shard, in shard order

# The ledger row (schema_migrations.name) holding the shard count the data is sharded with.
SHARDS_ROW = "cluster:shards"

_ROUTES = [
    (re.compile(r"CREATE\s+DATABASE\b", re.I), ON_CLUSTER),
    (re.compile(r"(CREATE(\s+OR\s+REPLACE)?|ALTER|DROP|RENAME)\s+(TABLE|VIEW|MATERIALIZED\s+VIEW|DICTIONARY)\b",
                re.I), ONE_SERVER),
    (re.compile(r"INSERT\s+INTO\b", re.I), EVERY_SHARD),
]
_CREATE_DATABASE = re.compile(r"(CREATE\s+DATABASE\s+IF\s+NOT\s+EXISTS\s+`[^`]+`)(\s+ENGINE\b)", re.I)


def route(sql: str, where: str) -> str:
    """The route of one statement; `where` (file:line) names it in the error."""
    for pattern, to in _ROUTES:
        if pattern.match(sql.lstrip()):
            return to
    raise SqlTemplateError(f"{where}: a cluster migration may hold CREATE DATABASE, CREATE/ALTER/DROP/RENAME "
                           f"of a table or view, or INSERT INTO (a data step, run on every shard); not "
                           f"{sql.split(None, 2)[:2]} (generator/cluster_ddl.py routes each kind)")


def on_cluster(sql: str, cluster: str) -> str:
    """The migration's CREATE DATABASE IF NOT EXISTS, run ON CLUSTER (every server)."""
    made, n = _CREATE_DATABASE.subn(rf"\1 ON CLUSTER {cluster}\2", sql, count=1)
    if not n:
        raise SqlTemplateError(f"cannot put ON CLUSTER into: {sql.splitlines()[0]}")
    return made


def shards_ledger_row(spec: dict) -> tuple[str, str]:
    """(name, checksum) of the ledger row recording the shard count."""
    return SHARDS_ROW, str(spec["clickhouse"]["cluster"]["shards"])
