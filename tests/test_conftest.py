"""The `store` fixture makes each test's database from a template migrated once per worker
(tests/conftest.py): it must be what `migrate` leaves, or every engine test would test
something else than the product; all of it but the refreshable views and their queries, unless
the test is marked `refresh`."""
import os
import subprocess
import sys

import pytest

from cvat_analytics.migrate import applied, migrate, migrations
from cvat_analytics_generator.spec import load_spec
from tests.conftest import new_database_name, write_spec

# A refresh in flight has a `.tmp.inner_id.<uuid>` table of its own for a moment: not the schema.
TABLES = ("SELECT name, engine, replaceRegexpAll(create_table_query, {db:String}, 'DB') FROM system.tables "
          "WHERE database = {db:String} AND NOT startsWith(name, '.tmp') ORDER BY name")
COLUMNS = ("SELECT table, name, position, type, default_kind, default_expression, compression_codec "
           "FROM system.columns WHERE database = {db:String} AND NOT startsWith(table, '.tmp') ORDER BY table, position")


def schema(client, database: str) -> tuple[list, list]:
    db = {"db": database}
    return client.query(TABLES, parameters=db).result_rows, client.query(COLUMNS, parameters=db).result_rows


def refreshing(client, database: str) -> list[str]:
    return [view for view, in client.query("SELECT view FROM system.view_refreshes WHERE database = {db:String} "
                                            "ORDER BY view", parameters={"db": database}).result_rows]


@pytest.mark.clickhouse
@pytest.mark.parametrize("refresh", [False, pytest.param(True, marks=pytest.mark.refresh)])
def test_a_store_is_what_migrate_leaves_and_a_second_migrate_applies_nothing(store, tmp_path, refresh):
    """Without the mark `refresh`, all of it but the refreshable views; with it, all of it."""
    _, path = write_spec(tmp_path, **{"clickhouse.database": new_database_name()})
    migrated = load_spec(path)
    migrate(store.client, migrated, log=lambda *_: None)
    try:
        tables, columns = schema(store.client, migrated["clickhouse"]["database"])
        views = refreshing(store.client, migrated["clickhouse"]["database"])
    finally:
        store.client.command(f"DROP DATABASE `{migrated['clickhouse']['database']}` SYNC")
    assert views == ["productivity_refresh", "working_time_refresh", "working_time_refresh_plan"]
    # each runs a plain view of its own: its query (refreshable_view in queries/working_time.jinja)
    queries = [f"{view}_query" for view in views]
    assert set(queries) <= {row[0] for row in tables}
    if not refresh:
        tables = [row for row in tables if row[0] not in views + queries]
        columns = [row for row in columns if row[0] not in views + queries]
    assert len(tables) > 10 and schema(store.client, store.database) == (tables, columns)
    assert refreshing(store.client, store.database) == (views if refresh else [])
    assert applied(store.client, store.spec) == {m.name: m.checksum for m in migrations(store.spec)}
    assert migrate(store.client, store.spec, log=lambda *_: None) == []
    assert store.client.command(f"SELECT count() FROM `{store.database}`.events") == 0


@pytest.mark.clickhouse
def test_a_stores_spec_file_is_write_specs_and_its_spec_is_load_specs(store, tmp_path):
    _, path = write_spec(tmp_path, **{"clickhouse.database": store.database})
    assert store.spec_path.read_text() == path.read_text()
    assert load_spec(store.spec_path) == store.spec


@pytest.mark.clickhouse
def test_each_store_is_a_database_of_its_own(store, migrated_template):
    assert store.database != migrated_template.database
    names = store.client.query("SELECT name FROM system.databases").result_rows
    assert (migrated_template.database,) not in names  # the template is dropped: nothing refreshes in it


def test_loadgroup_runs_a_group_on_one_worker(tmp_path):
    """`make test` runs `--dist loadgroup` so that a module's costly fixture (a demo store, a
    browser) is built by one worker. pytest-xdist groups by a suffix it writes into each node id;
    pytest 9.2 ignores that write (xdist issue 1386) and the groups are silently spread over both
    workers: pyproject.toml pins pytest below 9.2, and this test fails if grouping is lost again."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_grouped.py").write_text(
        "import os, pytest\n"
        "pytestmark = pytest.mark.xdist_group('one')\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "def test_x(i, request):\n"
        "    with open('workers.txt', 'a') as f:\n"
        "        f.write(os.environ['PYTEST_XDIST_WORKER'] + ' ' + request.node.nodeid + '\\n')\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "xdist", "-p", "no:cacheprovider", "-q", "-n", "2",
                          "--dist", "loadgroup", "test_grouped.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})  # xdist alone: under a second
    assert run.returncode == 0, run.stdout + run.stderr
    lines = (tmp_path / "workers.txt").read_text().splitlines()
    assert len(lines) == 6 and len({line.split()[0] for line in lines}) == 1, lines
