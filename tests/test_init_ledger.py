"""A store filled through the Docker image's init path (the rendered clickhouse/migrations/
run in name order, each file as one multi-statement query, as the image's entrypoint pipes
it to clickhouse-client) leaves the ledger `migrate` writes: the first migrate after a
plain `docker compose up` applies nothing. Run on chdb, whose multi-statement query is
clickhouse-local's (the same parser and splitting as clickhouse-client's)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

CLI = [sys.executable, "-m", "cvat_analytics.cli"]
# Each init script through one multi-statement query, in a process of its own (chdb opens
# a data path in one process at a time), as /docker-entrypoint-initdb.d/*.sql runs them.
INIT = """
import sys
from pathlib import Path
import chdb.session
session = chdb.session.Session(sys.argv[1])
for script in sorted(Path(sys.argv[2]).glob("*.sql")):
    session.query(script.read_text())
    print(script.name)
"""


@pytest.mark.clickhouse
def test_the_first_migrate_after_the_init_scripts_applies_nothing(tmp_path):
    deploy, data = tmp_path / "deploy", tmp_path / "clickhouse"
    subprocess.run([*CLI, "render", "--out", str(deploy)], check=True, cwd=REPO, capture_output=True)
    init = subprocess.run([sys.executable, "-c", INIT, str(data), str(deploy / "clickhouse/migrations")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert init.returncode == 0, init.stderr[-3000:]
    ran = init.stdout.split()
    run = subprocess.run([*CLI, "migrate", "--dsn", f"chdb://{data}"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "applied " not in run.stdout
    assert f"nothing to apply: {len(ran) - 1} migrations already applied" in run.stdout
    assert ran[0].startswith("0001_") and ran[-1] == "9999_schema_migrations.sql"
