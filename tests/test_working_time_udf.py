"""The executable UDF inside the engine, and the `working-time` command end to end.

chdb takes `udf_path` only when a process first opens its engine, and the test
session's engine is already open without it; so these run in child processes, each
on a chdb path of its own (the CLI opens the engine with the UDF for --engine udf)."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import working_time_oracle as oracle  # noqa: E402
from test_working_time import _as_rows, random_stream, split_shuffled  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cvat_analytics.cli"]

CHILD = r"""
import json, sys
sys.path[:0] = [{repo!r}, {tests!r}]
from cvat_analytics_generator.spec import load_spec
from cvat_analytics import store, working_time as wt
from cvat_analytics.migrate import migrate
from test_working_time import _as_rows, db_events, db_totals, random_stream, split_shuffled
import working_time_oracle as oracle

spec = load_spec()
spec["working_time"]["engine"] = "udf"  # the refreshable view keeps the totals with this engine too
client = wt.connect_with_udf("chdb://" + {path!r}, spec)
migrate(client, spec, log=lambda *_: None)
assert wt.udf_available(client)
events = random_stream({seed})
for i, batch in enumerate(split_shuffled(events, {seed})):
    store.insert_json_rows(client, "cvat", _as_rows(batch))
    if i % 4 == 3:
        wt.wait_current(client, spec)
wt.wait_current(client, spec)
sql, udf = db_events(client, spec, "sql"), db_events(client, spec, "udf")
from test_working_time import oracle_events
stored = client.query("SELECT user_id, project_id, task_id, job_id, sum(working_time_ms) AS ms "
                      "FROM cvat.working_time_totals GROUP BY user_id, project_id, task_id, job_id HAVING ms != 0").result_rows
print(json.dumps(dict(
    sql_eq_oracle=sql == oracle_events(events), udf_eq_oracle=udf == oracle_events(events),
    totals_udf=db_totals(client, spec, "udf") == oracle.totals(events),
    refresh_udf={{tuple(r[:4]): r[4] for r in stored}} == oracle.totals(events),
)))
"""


@pytest.mark.slow  # `check`'s engine run or a subprocess per step: seconds of CPU
@pytest.mark.parametrize("seed", range(2))
def test_udf_in_engine_matches_sql_and_oracle(tmp_path, seed):
    code = CHILD.format(repo=str(REPO), tests=str(REPO / "tests"), path=str(tmp_path / "db"), seed=seed)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "sql_eq_oracle": True, "udf_eq_oracle": True, "totals_udf": True, "refresh_udf": True}


def _csv_totals(text):
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["user_id", "project_id", "task_id", "job_id", "working_time_ms"]
    as_id = lambda v: int(v) if v else None  # noqa: E731 - NULL ids print empty
    return {(int(r[0]), as_id(r[1]), as_id(r[2]), as_id(r[3])): int(r[4]) for r in rows[1:]}


@pytest.mark.slow  # `check`'s engine run or a subprocess per step: seconds of CPU
def test_cli_csv_after_shuffled_import_equals_the_rule(tmp_path):
    events = random_stream(21)
    dsn = f"chdb://{tmp_path / 'db'}"
    assert subprocess.run(CLI + ["migrate", "--dsn", dsn], capture_output=True, cwd=REPO).returncode == 0
    batches = split_shuffled(events, 21)
    # a few imports one process each, like an operator would run them; the rest
    # (still shuffled) in one file, split by the importer into inserts of 37 rows
    chunks = [b for b in batches[:3]] + [[e for b in batches[3:] for e in b]]
    for i, chunk in enumerate(chunks):
        path = tmp_path / f"batch{i}.ndjson"
        path.write_bytes(_as_rows(chunk))
        run = subprocess.run(CLI + ["import", "--dsn", dsn, str(path), "--batch-size", "37"],
                             capture_output=True, text=True, cwd=REPO)
        assert run.returncode == 0, run.stderr
    expected = oracle.totals(events)
    assert any(k[3] is None for k in expected)  # NULL ids are in the data
    for engine in ("sql", "udf"):
        run = subprocess.run(CLI + ["working-time", "--dsn", dsn, "--by", "user,project,task,job",
                                    "--format", "csv", "--engine", engine],
                             capture_output=True, text=True, cwd=REPO, timeout=300)
        assert run.returncode == 0, run.stderr
        assert _csv_totals(run.stdout) == expected, engine
