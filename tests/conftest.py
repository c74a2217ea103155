"""Shared fixtures.

ClickHouse in tests is the real engine: chdb, through clickhouse-connect. A process
can open one chdb path for its life, so the whole session shares one path and each
test gets its own database in it (the database name is a spec setting). Tests that
use the engine are marked `clickhouse`; any other test that tries to open it fails
at once (snuba's rule), so a slow or stateful dependency never hides in a unit test.

`make test` runs the suite in processes of its own (pytest-xdist, `-n <cores + 1> --dist loadgroup`):
each worker has its own temporary directory, so its own chdb path, and every port is
picked by the kernel (port 0). A module whose fixture is costly (a browser, demo data)
names an `xdist_group`, so one worker builds it once; tests marked `slow` are run first,
so the longest ones do not start last and keep one core busy alone at the end.

Migrating a database runs some seventy statements and renders and parses every migration
(over a CPU-second on chdb), and a few hundred tests want a fresh one. So each worker
migrates one database per session for real and then drops it, keeping what it left: the
DDL of each table and view, in an order that creates them, and the ledger's statements.
`store` gives each test a database of its own made from those (its name substituted for
the template's): the same tables, columns, settings, views and ledger as `migrate` leaves,
so a second `migrate` applies nothing, for under half the CPU. A test still never
sees another's rows: every database is new and empty but for its ledger.
tests/test_conftest.py checks the copy against a real migration.

A store leaves out the refreshable views (`working_time_refresh_plan` and
`working_time_refresh`, which keep working_time_totals current, and `productivity_refresh`,
which keeps the productivity state) and the plain views that hold their queries
(`<view>_query`: creating one analyses its query) unless its test is marked
`@pytest.mark.refresh`. They were most of what a store cost: measured with the refresh still
one view, a store took 1.1-1.2 CPU-s in its first 2 s and 0.14 CPU-s without it (its CREATE
~0.22 CPU-s, the engine analysing a 10k-character SELECT, and its first run, which starts at
creation whatever the statement says: `EMPTY`, `REFRESH EVERY 1 HOUR` and `SYSTEM STOP VIEWS`
were each tried, 0.6-0.8 CPU-s; then a run at every 10 s of the clock while the test lives).
A test that reads the totals, the refresh log or `system.view_refreshes`, waits for a refresh
(`wait_current`), or checks health and alerts about it, is marked `refresh` and gets the views,
so the whole schema; without the mark, waiting for a refresh fails at once, naming the view
that is not there.
"""
from __future__ import annotations

import copy
import functools
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cvat_analytics import store as store_module
from cvat_analytics.migrate import create_in_order
from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec
from cvat_analytics_generator.yaml_load import safe_load

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Store:
    """A migrated database of its own in the session's chdb path."""
    dsn: str
    spec: dict
    spec_path: Path
    client: object

    @property
    def database(self) -> str:
        return self.spec["clickhouse"]["database"]


def pytest_collection_modifyitems(items):
    """The slow tests first, the longest of them (`@pytest.mark.slow(seconds)`, its wall time
    on make test's workers) before the rest; a stable sort: every module's tests stay in order."""
    def order(item):
        slow = item.get_closest_marker("slow")
        return (slow is None, -(slow.args[0] if slow and slow.args else 0))
    items.sort(key=order)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failure about working time in a test whose store has no refresh says how to get one."""
    report = (yield).get_result()
    if (report.failed and "store" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("refresh")
            and ("working_time" in report.longreprtext or "productivity" in report.longreprtext)):
        report.sections.append(("store", "this test's store has no refresh (the views working_time_refresh_plan, working_time_refresh, productivity_refresh): "
                                         "mark the test @pytest.mark.refresh if it needs one (tests/conftest.py)"))


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture(autouse=True)
def _block_clickhouse_unless_marked(request, monkeypatch):
    if request.node.get_closest_marker("clickhouse"):
        return
    def refuse(*_a, **_k):
        raise RuntimeError("this test opens ClickHouse but is not marked @pytest.mark.clickhouse")
    monkeypatch.setattr(store_module, "connect", refuse)
    monkeypatch.setattr(store_module.clickhouse_connect, "get_client", refuse)


@functools.cache
def _default_spec_data(path: Path, mtime_ns: int, size: int) -> dict:
    return safe_load(path.read_text())


# Spec changes for a store whose refresh runs when asked (working_time.wait_current) and
# otherwise hourly: each scheduled run only costs a test CPU. The stale alert must allow twice
# the interval.
HOURLY_REFRESH = {"working_time.refresh_interval_s": 3600, "working_time.productivity_refresh_interval_s": 3600,
                  "alerts.working_time_stale.max_age_minutes": 121,
                  "alerts.productivity_stale.max_age_minutes": 121}


def write_spec(directory: Path, **changes) -> tuple[dict, Path]:
    """A copy of the default spec with dotted-key changes, written to `directory`.
    Returns the (unvalidated) spec and its path, so tests can write bad specs too."""
    stat = DEFAULT_SPEC.stat()  # parsed once while the file stays as it is; each caller gets a copy
    data = copy.deepcopy(_default_spec_data(DEFAULT_SPEC, stat.st_mtime_ns, stat.st_size))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    path = directory / "analytics.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return data, path


def new_database_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@dataclass
class MigratedTemplate:
    """What `migrate` left in a database called `database`, to make another like it."""
    database: str
    spec_text: str  # the spec file that named it
    spec: dict  # load_spec of that file
    ddl: list[str]  # CREATE statements of its tables and views, in an order that works
    refresh_ddl: frozenset[str]  # those of the refreshable views and their query views (migrate.schema_ddl)
    ledger: list[tuple[str, list[str]]]  # (migration, its statements) as checksummed

    def rename(self, text: str, database: str) -> str:
        return re.sub(rf"\b{self.database}\b", database, text)

    def copy_into(self, client, database: str, refresh: bool = True) -> None:
        """Create `database` as migrate would have left it, ledger included; without its
        refreshable views unless `refresh` (see the module's docstring)."""
        from cvat_analytics_generator.sql import checksum

        client.command(f"CREATE DATABASE `{database}`")
        for statement in self.ddl:
            if refresh or statement not in self.refresh_ddl:
                client.command(self.rename(statement, database))
        rows = [(name, checksum([self.rename(s, database) for s in statements])) for name, statements in self.ledger]
        values = ", ".join(f"({{n{i}:String}}, {{c{i}:String}})" for i in range(len(rows)))
        parameters = {f"{key}{i}": value for i, row in enumerate(rows) for key, value in zip("nc", row)}
        client.command(f"INSERT INTO `{database}`.schema_migrations (name, checksum) VALUES {values}",
                       parameters=parameters)


def _creatable_order(client, database: str, statements: dict[str, str], scratch: str) -> list[str]:
    """The statements in an order that creates every object, found by trying them in a
    scratch database."""
    template = MigratedTemplate(database, "", {}, [], frozenset(), [])
    names = sorted(statements)
    client.command(f"CREATE DATABASE `{scratch}`")
    try:
        order = create_in_order(client, [template.rename(statements[name], scratch) for name in names])
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{scratch}` SYNC")
    return [statements[names[i]] for i in order]


@pytest.fixture(scope="session")
def migrated_template(chdb_dsn, tmp_path_factory) -> MigratedTemplate:
    """One real migration per worker, kept as DDL and ledger (see the module's docstring)."""
    from cvat_analytics.migrate import migrate, migrations, schema_ddl

    database = new_database_name()
    _, spec_path = write_spec(tmp_path_factory.mktemp("template"), **{"clickhouse.database": database})
    spec = load_spec(spec_path)
    client = store_module.connect(chdb_dsn)
    migrate(client, spec, log=lambda *_: None)
    # not a refresh's table in flight (`.tmp.inner_id.<uuid>`: a non-APPEND refreshable view
    # fills one and exchanges it for its target; a template once captured one mid-run)
    rows = client.query("SELECT name, create_table_query FROM system.tables WHERE database = {db:String} "
                        "AND NOT startsWith(name, '.tmp')", parameters={"db": database}).result_rows
    refresh_ddl = frozenset(schema_ddl(client, database, database, "refreshable"))
    client.command(f"DROP DATABASE `{database}` SYNC")
    ddl = _creatable_order(client, database, dict(rows), new_database_name())
    ledger = [(m.name, m.statements) for m in migrations(spec)]
    return MigratedTemplate(database, spec_path.read_text(), spec, ddl, refresh_ddl, ledger)


@pytest.fixture
def store(request, chdb_dsn, tmp_path, migrated_template) -> Store:
    """A fresh, migrated database in the shared chdb path (made from `migrated_template`:
    the same as migrating it, for under half the CPU), without the working-time refresh
    unless the test is marked `refresh` (see the module's docstring)."""
    database = new_database_name()
    spec_path = tmp_path / "analytics.yaml"
    # The default spec naming this database: what write_spec writes, and what load_spec reads from it.
    spec_path.write_text(migrated_template.rename(migrated_template.spec_text, database))
    spec = copy.deepcopy(migrated_template.spec)
    spec["clickhouse"]["database"] = database
    client = store_module.connect(chdb_dsn)
    migrated_template.copy_into(client, database, refresh=request.node.get_closest_marker("refresh") is not None)
    yield Store(chdb_dsn, spec, spec_path, client)
    client.command(f"DROP DATABASE IF EXISTS `{database}` SYNC")


@pytest.fixture
def make_served(store, tmp_path):
    """A factory: `make_served(spec=None, tokens=None, export=False, dashboards=False)`
    starts `serve`'s HTTP server in this process on a free port of 127.0.0.1 (store's
    database; export jobs and dashboards when asked) and returns it; every server it
    started is stopped at the end of the test."""
    from cvat_analytics.dashboards import Dashboards
    from cvat_analytics.export import ExportJobs
    from cvat_analytics.service import make_server

    started = []

    def start(spec: dict | None = None, tokens=None, export: bool = False, dashboards: bool = False):
        spec = spec or store.spec
        jobs = ExportJobs(lambda: store_module.open_handle(store.dsn), spec,
                          directory=tmp_path / f"exports-{len(started)}") if export else None
        pages = Dashboards(lambda: store_module.open_handle(store.dsn), spec) if dashboards else None
        srv = make_server(store.client, spec, "127.0.0.1", 0, store.dsn, tokens=tokens, jobs=jobs, pages=pages)
        srv.export_directory = jobs.directory if jobs else None  # for tests that look for export files
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        started.append((srv, thread, jobs))
        return srv

    yield start
    for srv, thread, jobs in started:
        if not srv.stopping.is_set():
            srv.stop()
        thread.join(5)
        if jobs is not None:
            jobs.shutdown()


@pytest.fixture
def server(make_served):
    """The service (ingest, health, export) on a free port, serving from a thread."""
    return make_served(export=True)
