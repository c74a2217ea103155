"""Retention: `clickhouse.retention_days` is a TTL that drops whole old parts, and
ingest refuses what the TTL would drop at once (an acknowledged event is never lost)."""
from __future__ import annotations

import copy
import json
import time

import pytest

from cvat_analytics.events import EventContract, format_ms
from cvat_analytics.migrate import migrate
from cvat_analytics.retention import RetentionRefused
from cvat_analytics.store import insert_json_rows

pytestmark = pytest.mark.clickhouse
DAY_MS = 86_400_000


def rows(days_ago: list[int]) -> bytes:
    now = int(time.time() * 1000)
    return b"".join(json.dumps({"scope": "create:task", "source": "server", "obj_id": d,
                                "timestamp": format_ms(now - d * DAY_MS)}).encode() + b"\n" for d in days_ago)


def test_old_parts_are_dropped_whole_by_the_ttl_and_new_events_stay(store):
    db, client = store.database, store.client
    assert store.spec["clickhouse"]["retention_days"] == 365
    longer = copy.deepcopy(store.spec)
    longer["clickhouse"]["retention_days"] = 3650  # events arrived while they were within retention...
    migrate(client, longer, log=lambda *_: None)
    insert_json_rows(client, db, rows([800, 700, 400]), token="old")
    insert_json_rows(client, db, rows([1, 30, 200]), token="new")
    assert client.command(f"SELECT count() FROM `{db}`.events") == 6

    # ...then the spec's 365 days apply again: dropping stored events needs the operator's yes.
    with pytest.raises(RetentionRefused, match="drops 3 events older than 365 days"):
        migrate(client, store.spec, log=lambda *_: None)
    migrate(client, store.spec, log=lambda *_: None, assume_yes=True)
    client.command(f"OPTIMIZE TABLE `{db}`.events FINAL")
    kept = client.query(f"SELECT obj_id FROM `{db}`.events ORDER BY obj_id").result_rows
    assert [r[0] for r in kept] == [1, 30, 200]
    parts = client.query(
        "SELECT partition, sum(rows) FROM system.parts WHERE database = {db:String} AND table = 'events' "
        "AND active GROUP BY partition HAVING sum(rows) > 0", parameters={"db": db}).result_rows
    assert len(parts) == len({format_ms(int(time.time() * 1000) - d * DAY_MS)[:7] for d in (1, 30, 200)})
    ddl = client.command(f"SHOW CREATE TABLE `{db}`.events")
    assert "TTL toDateTime(timestamp) + toIntervalDay(365)" in ddl and "ttl_only_drop_parts = 1" in ddl


def test_ingest_refuses_what_the_ttl_would_drop_at_once(store):
    contract = EventContract(store.spec)
    event = {"scope": "create:task", "source": "server", "timestamp": f"{int(time.time()) - 366 * 86400}"}
    with pytest.raises(ValueError, match=r"index 3: timestamp: older than clickhouse.retention_days \(365 days\)"):
        contract.normalize(event, 3)
    # Without the check the row would be acknowledged, then gone at the next TTL merge.
    insert_json_rows(store.client, store.database, rows([366]), token="t")
    store.client.command(f"OPTIMIZE TABLE `{store.database}`.events FINAL")
    assert store.client.command(f"SELECT count() FROM `{store.database}`.events") == 0
