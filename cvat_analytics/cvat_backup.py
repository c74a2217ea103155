"""One ClickHouse BACKUP of CVAT's database before cvat-analytics first adopts it.

The CVAT override's cvat_analytics_migrate runs `python -m cvat_analytics.cvat_backup` before
`cvat-analytics migrate`, at every start; it backs up once: when CVAT's `events` table is
there, our ledger (`schema_migrations`) is not yet (never adopted), and no complete backup is
on the backups volume (its `.backup` file, which ClickHouse writes last). Anything else is
said and skipped. The backup goes to the disk `backups` (config.d/cvat-backups.xml), on a
volume of its own, mounted read-only here to see whether it is complete. A failed backup
stops the service, so nothing is adopted without one. Imports only what the migration image
has (pyproject.toml's `migrate` extra).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cvat_analytics_generator.render import render_template
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.sql import parse

TEMPLATE = "clickhouse/runtime/cvat_backup.sql.j2"
POLL_S = 2.0


class BackupFailed(Exception):
    """ClickHouse said the backup failed; its error is in the message."""


def backup_name(spec: dict) -> str:
    return f"{spec['clickhouse']['database']}-before-adoption"


def backup_once(client, spec: dict, volume: Path, log=print, poll_s: float = POLL_S) -> str:
    """Take the backup if it is due; returns what happened: kept, new, adopted or taken."""
    database, name = spec["clickhouse"]["database"], backup_name(spec)
    sql = parse(render_template(spec, TEMPLATE, backup=name), TEMPLATE)
    if (Path(volume) / name / ".backup").is_file():
        log(f"backup {name} is on the backups volume already (taken before the first adoption)")
        return "kept"
    tables = {row[0] for row in client.query(sql.named("tables"), parameters={"database": database}).result_rows}
    if "events" not in tables:
        log(f"no {database}.events: a new CVAT, nothing to back up")
        return "new"
    if "schema_migrations" in tables:
        log(f"{database} was adopted before this backup step existed: no backup taken now")
        return "adopted"
    log(f"backing up {database} to Disk('backups', '{name}') before adopting it ...")
    backup_id = client.query(sql.named("backup")).result_rows[0][0]
    while True:
        rows = client.query(sql.named("status"), parameters={"id": str(backup_id)}).result_rows
        status, error, size = rows[0] if rows else ("", "", 0)
        if status == "BACKUP_CREATED":
            log(f"backup {name} taken ({size} bytes): docs/cvat-stack.md says how to restore it")
            return "taken"
        if status in ("BACKUP_FAILED", "BACKUP_CANCELLED") or not rows:
            raise BackupFailed(f"BACKUP DATABASE {database} failed ({status or 'not in system.backups'}): "
                               f"{error}; nothing was adopted")
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    from .store import connect

    parser = argparse.ArgumentParser(prog="python -m cvat_analytics.cvat_backup", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--volume", required=True, type=Path, help="the backups volume, mounted read-only")
    args = parser.parse_args(argv)
    try:
        backup_once(connect(args.dsn, create=False), load_spec(args.spec), args.volume)
    except Exception as exc:  # one line for `docker compose logs`, and a failed service
        print(f"cvat-analytics backup: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
