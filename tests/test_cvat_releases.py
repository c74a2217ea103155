"""CVAT's releases up to the newest known one (2.73.0), read from the files vendored in
tests/fixtures/cvat/<release>/ (docs/cvat-compatibility.md, "CVAT releases").

The spec takes every known release and refuses a newer one, naming the known ones. The
client address CVAT records from 2.66 (`remote_addr`) goes end to end: our table has the
column in CVAT's own definition whichever of CVAT's init.py and our migrations runs first,
a real `serve` stores it from a CVAT 2.73 body over a socket, and our CSV export leaves it
out exactly as CVAT's export query does, run on the same table. (Vector's side, per
release: tests/test_cvat_stack.py.)
"""
from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

from cvat_analytics import store as store_module
from cvat_analytics.export import parse_filters, write_csv
from cvat_analytics.migrate import migrate
from cvat_analytics_generator.spec import SpecError, load_spec

from .conftest import write_spec
from .test_serve import cvat_batch
from .test_serve_export import call, wait_finished

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cvat"
RELEASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
NEWEST = RELEASES[-1]
WITH_INIT_PY = [r for r in RELEASES if (FIXTURES / r / "components/analytics/clickhouse/init.py").exists()]


def test_every_known_release_is_taken_and_a_newer_one_refused_naming_the_known_ones(tmp_path):
    assert NEWEST == "v2.73.0"
    for release in [r.lstrip("v") for r in RELEASES] + ["2.73.1", "2.70.2"]:
        _, path = write_spec(tmp_path, **{"cvat_stack.cvat_version": release})
        assert load_spec(path)["cvat_stack"]["cvat_version"] == release
    for release in ("2.74.0", "2.80.1", "3.0.0", "2.21.0", "2.7.0"):
        _, path = write_spec(tmp_path, **{"cvat_stack.cvat_version": release})
        with pytest.raises(SpecError) as refused:
            load_spec(path)
        message = str(refused.value)
        assert "cvat_stack.cvat_version" in message and repr(release) in message, message
        assert "2.22.x to 2.73.x" in message and "2.73.0 is the newest known" in message, message


# --- CVAT's DDL and ours, in either order (chdb) ------------------------------------------

def cvat_init_statements(release: str, database: str) -> list[str]:
    """What CVAT's init.py of `release` runs at every cvat_server start, in order, on `database`."""
    text = (FIXTURES / release / "components/analytics/clickhouse/init.py").read_text()
    order = re.search(r"migrations = \[(.*?)\]", text, re.S).group(1).split()
    bodies = {name: body for name, body in re.findall(r'def (migration_\w+)\(.*?"""\\\n(.*?)"""', text, re.S)}
    statements = [f"CREATE DATABASE IF NOT EXISTS `{database}`"]
    for name in (n.rstrip(",") for n in order):
        statements.append(re.sub(r"\b(TABLE(?: IF NOT EXISTS)?) events\b", rf"\1 `{database}`.events", bodies[name]).strip())
    return statements


def remote_addr_column(client, database: str) -> tuple:
    return client.query("SELECT type, default_kind, default_expression FROM system.columns "
                        "WHERE database = {d:String} AND table = 'events' AND name = 'remote_addr'",
                        parameters={"d": database}).result_rows


def cvat_export_query(release: str, database: str) -> str:
    """The query CVAT's CSV export of `release` runs (cvat/apps/events/export.py), on `database`."""
    text = (FIXTURES / release / "cvat/apps/events/export.py").read_text()
    query = re.search(r'query = "(SELECT \*[^"]*FROM events)"', text).group(1)
    return query.replace("FROM events", f"FROM `{database}`.events")


def test_cvats_export_query_leaves_remote_addr_out_from_2_66():
    for release in RELEASES:
        query = cvat_export_query(release, "cvat")
        assert ("EXCEPT(remote_addr)" in query) == (release >= "v2.66.0"), (release, query)


@pytest.fixture
def database(chdb_dsn, tmp_path):
    name = f"t_{uuid.uuid4().hex[:12]}"
    client = store_module.connect(chdb_dsn)
    _, path = write_spec(tmp_path, **{"clickhouse.database": name})
    yield client, name, load_spec(path)
    client.command(f"DROP DATABASE IF EXISTS `{name}` SYNC")


CVAT_DEFINITION = [("Nullable(String)", "DEFAULT", "NULL")]  # init.py: `remote_addr` Nullable(String) DEFAULT NULL


@pytest.mark.clickhouse
@pytest.mark.parametrize("release", WITH_INIT_PY)
def test_cvats_init_py_then_ours_then_cvats_again_keeps_every_event_and_one_remote_addr(database, release):
    client, name, spec = database
    for statement in cvat_init_statements(release, name):  # CVAT's install, before the override
        client.command(statement)
    client.command(f"INSERT INTO `{name}`.events (scope, source, timestamp) VALUES ('create:task', 'server', now64())")
    migrate(client, spec, log=lambda *_: None)
    # Adopted: the column is there before any CVAT that sends the address starts.
    assert remote_addr_column(client, name) == CVAT_DEFINITION
    for statement in cvat_init_statements(NEWEST, name):  # cvat_server restarts, then CVAT is upgraded
        client.command(statement)
    assert remote_addr_column(client, name) == CVAT_DEFINITION
    assert client.command(f"SELECT count() FROM `{name}`.events") == 1
    # CVAT's export query of the newest release reads CVAT's columns and no remote_addr.
    columns = client.query(cvat_export_query(NEWEST, name) + " LIMIT 0").column_names
    assert list(columns) == [c["name"] for c in spec["events"]["columns"]]


@pytest.mark.clickhouse
def test_ours_first_then_cvats_init_py_finds_the_column_as_it_would_add_it(database):
    client, name, spec = database
    migrate(client, spec, log=lambda *_: None)
    assert remote_addr_column(client, name) == CVAT_DEFINITION
    for statement in cvat_init_statements(NEWEST, name):
        client.command(statement)
    assert remote_addr_column(client, name) == CVAT_DEFINITION


# --- embedded ingest and the CSV export ----------------------------------------------------

def cvat_2_73_body(request_id: str) -> list[dict]:
    """Server events as CVAT 2.73 logs them (remote_addr beside access_token_id, event.py;
    a chunk read from the cache, `read:cache_item`, new in 2.65), and one without an
    address (an event logged outside a request)."""
    events = cvat_batch(request_id, 3)
    events[0]["remote_addr"] = "203.0.113.7"
    events[1].update(remote_addr="2001:db8::1", scope="read:cache_item", obj_name=None, obj_val=None,
                     payload=json.dumps({"request": {"id": request_id},
                                         "cache_item": {"queue": "chunks", "size": 1048576}}))
    return events


@pytest.mark.clickhouse
def test_serve_stores_remote_addr_and_its_csv_export_leaves_it_out_as_cvats_does(server, store):
    request_id = str(uuid.uuid4())
    body = cvat_2_73_body(request_id)
    status, _, answer = call(server, "POST", "/", json.dumps(body).encode())
    assert status == 200, answer
    # The reference path (ids as digit strings are not the fast path's shape) keeps it too.
    slow = [dict(e, project_id="1", remote_addr="198.51.100.9") for e in cvat_batch(request_id + "-ref", 1)]
    assert call(server, "POST", "/", json.dumps(slow).encode())[0] == 200
    stored = store.client.query(f"SELECT remote_addr, scope FROM `{store.database}`.events").result_rows
    assert sorted((r[0] or "", r[1]) for r in stored) == [
        ("", "update:task"), ("198.51.100.9", "update:task"), ("2001:db8::1", "read:cache_item"),
        ("203.0.113.7", "update:task")]

    rq_id = json.loads(call(server, "POST", "/api/events/export")[2])["rq_id"]
    finished = wait_finished(server, rq_id)
    status, _, csv = call(server, "GET", finished["result_url"][len(server.url):])
    assert status == 200
    lines = csv.decode().splitlines()
    cvat_columns = store.client.query(cvat_export_query(NEWEST, store.database) + " LIMIT 0").column_names
    assert lines[0].split(",") == list(cvat_columns) and len(lines) == 1 + 4
    assert not any(addr in csv.decode() for addr in ("203.0.113.7", "2001:db8::1", "198.51.100.9"))


@pytest.mark.clickhouse
def test_the_export_leaves_remote_addr_out_even_where_the_spec_lists_it_as_a_column(chdb_dsn, tmp_path):
    name = f"t_{uuid.uuid4().hex[:12]}"
    data, path = write_spec(tmp_path, **{"clickhouse.database": name})
    data["events"]["columns"].append({"name": "remote_addr", "type": "Nullable(String)"})
    path.write_text(json.dumps(data))
    spec = load_spec(path)
    client = store_module.connect(chdb_dsn)
    try:
        migrate(client, spec, log=lambda *_: None)
        client.command(f"INSERT INTO `{name}`.events (scope, source, timestamp, remote_addr) "
                       "VALUES ('create:task', 'server', now64(), '192.0.2.1')")
        out = tmp_path / "events.csv"
        with open(out, "wb") as f:
            assert write_csv(client, spec, parse_filters({}), f) == 1
        header, row = out.read_text().splitlines()
        assert header.split(",") == [c["name"] for c in spec["events"]["columns"] if c["name"] != "remote_addr"]
        assert "192.0.2.1" not in row
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{name}` SYNC")
