"""`serve` keeps the precomputed working-time totals current, with either engine: after
events arrive and one refresh period passes, working_time_totals equals the query-time
computation of `cvat-analytics working-time`."""
from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import write_spec
from cvat_analytics.bench.service import ServeProcess
from tests.test_serve import CLI


def run(*args) -> str:
    result = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.clickhouse  # the serve process runs the engine
@pytest.mark.parametrize("engine", ["sql", "udf"])
def test_serve_refreshes_the_totals_to_the_query_time_result(tmp_path, engine):
    _, spec = write_spec(tmp_path, **{"working_time.engine": engine, "working_time.refresh_interval_s": 1})
    dsn = f"chdb://{tmp_path / 'data'}"
    serve = ServeProcess(dsn, spec)
    try:
        run("demo", "--spec", spec, "--url", serve.url + "/", "--events", "3000", "--days", "2", "--seed", "5")
        time.sleep(3)  # more than one refresh period after the last acknowledged request
    finally:
        log = serve.stop()
    assert serve.proc.returncode == 0, log
    assert "refresh failed" not in log
    computed = run("working-time", "--spec", spec, "--dsn", dsn, "--by", "user", "--engine", "sql")
    stored = run("query", "--spec", spec, "--dsn", dsn, "--format", "csv",
                 "SELECT user_id, sum(working_time_ms) AS working_time_ms FROM cvat.working_time_totals "
                 "GROUP BY user_id HAVING working_time_ms != 0 ORDER BY user_id")
    assert len(computed.splitlines()) > 3
    assert stored.splitlines()[1:] == computed.splitlines()[1:]
