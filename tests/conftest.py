"""Shared fixtures.

ClickHouse in tests is the real engine: chdb, through clickhouse-connect. A process
can open one chdb path for its life, so the whole session shares one path and each
test gets its own database in it (the database name is a spec setting). Tests that
use the engine are marked `clickhouse`; any other test that tries to open it fails
at once (snuba's rule), so a slow or stateful dependency never hides in a unit test.

`make test` runs the suite in processes of its own (pytest-xdist, `-n 2 --dist loadgroup`):
each worker has its own temporary directory, so its own chdb path, and every port is
picked by the kernel (port 0). A module whose fixture is costly (a browser, demo data)
names an `xdist_group`, so one worker builds it once; tests marked `slow` are run first,
so the longest ones do not start last and keep one core busy alone at the end.
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cvat_analytics import store as store_module
from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec

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
    """The slow tests first (a stable sort: every module's tests stay in their order)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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


def write_spec(directory: Path, **changes) -> tuple[dict, Path]:
    """A copy of the default spec with dotted-key changes, written to `directory`.
    Returns the (unvalidated) spec and its path, so tests can write bad specs too."""
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    path = directory / "analytics.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return data, path


@pytest.fixture
def store(chdb_dsn, tmp_path) -> Store:
    """A fresh, migrated database in the shared chdb path."""
    from cvat_analytics.migrate import migrate

    _, spec_path = write_spec(tmp_path, **{"clickhouse.database": f"t_{uuid.uuid4().hex[:12]}"})
    spec = load_spec(spec_path)
    client = store_module.connect(chdb_dsn)
    migrate(client, spec, log=lambda *_: None)
    yield Store(chdb_dsn, spec, spec_path, client)
    client.command(f"DROP DATABASE IF EXISTS `{spec['clickhouse']['database']}` SYNC")


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
