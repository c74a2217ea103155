"""Retention on CVAT's own events table once adopted: kept for ever unless the operator asks.

In CVAT's stack the events table may be CVAT's (its init.sh / init.py made it, sorted by
timestamp alone); migration 0002 never replaces it and 0007 adopts it. CVAT keeps events for
ever, so on an adopted table migration 0003 sets the TTL of cvat_stack.adopted_retention_days
(0 = none) instead of clickhouse.retention_days. And whatever the table, before a TTL is set
`migrate` says how many events and bytes it would drop, and refuses unless told --yes:
ClickHouse applies a new TTL to the parts already stored.
"""
from __future__ import annotations

import copy
import re

from clickhouse_connect.driver.client import Client

from cvat_analytics_generator.render import context, environment

RETENTION_MIGRATION = "0003_events_retention_and_dedup"
# ORDER BY (timestamp) in CVAT's DDL; system.tables spells it with or without parentheses.
CVAT_SORTING_KEY = "timestamp"
# The TTL migration 0003 sets, as ClickHouse prints it back in engine_full.
_TTL_DAYS = re.compile(r"\bTTL toDateTime\(timestamp\) \+ toIntervalDay\((\d+)\)")


class RetentionRefused(Exception):
    """A TTL would drop stored events and the operator has not said --yes."""


def _render(spec: dict, template: str) -> str:
    return environment().get_template(f"clickhouse/queries/{template}").render(context(spec))


def _query(client: Client, spec: dict, template: str, **parameters):
    return client.query(_render(spec, template),
                        parameters={"database": spec["clickhouse"]["database"], **parameters}).result_rows


def _layout(client: Client, spec: dict) -> tuple[str, str] | None:
    rows = _query(client, spec, "events_table_layout.sql.j2")
    return (rows[0][0], rows[0][1]) if rows else None


def is_adopted(client: Client, spec: dict) -> bool:
    """The events table exists and is CVAT's own (its sort key), not one 0002 created."""
    layout = _layout(client, spec)
    return layout is not None and layout[0].strip("() ") == CVAT_SORTING_KEY


def ttl_days_in_force(client: Client, spec: dict) -> int | None:
    """Days of the retention TTL the events table has now; None without one."""
    layout = _layout(client, spec)
    match = _TTL_DAYS.search(layout[1]) if layout else None
    return int(match.group(1)) if match else None


def effective_spec(client: Client, spec: dict) -> dict:
    """The spec the migrations are rendered with: on an adopted CVAT table, the retention
    is cvat_stack.adopted_retention_days."""
    if not is_adopted(client, spec):
        return spec
    adopted = copy.deepcopy(spec)
    adopted["clickhouse"]["retention_days"] = spec["cvat_stack"]["adopted_retention_days"]
    return adopted


def would_drop(client: Client, spec: dict, days: int) -> tuple[int, int]:
    """(events older than `days`, bytes of the parts holding only such events)."""
    events, size = _query(client, spec, "retention_would_drop.sql.j2", days=days)[0]
    return int(events), int(size)


def before_retention_migration(client: Client, spec: dict, assume_yes: bool, log=print) -> None:
    """Before migration 0003 sets the spec's retention. Retention 0: remove a TTL in force.
    Otherwise refuse, with the counts, when the TTL would drop stored events and
    `assume_yes` is false; with it, say what goes."""
    days = spec["clickhouse"]["retention_days"]
    in_force = ttl_days_in_force(client, spec)
    if days <= 0:
        if in_force is not None:
            client.command(_render(spec, "events_remove_ttl.sql.j2"))
            log(f"removed the {in_force}-day retention of {spec['clickhouse']['database']}.events")
        return
    if in_force is not None and in_force <= days:
        return  # drops nothing the TTL in force does not already drop
    events, size = would_drop(client, spec, days)
    if not events:
        return
    what = (f"a retention of {days} days drops {events} events older than {days} days from "
            f"{spec['clickhouse']['database']}.events ({size} bytes on disk in parts holding only such events)")
    if not assume_yes:
        raise RetentionRefused(f"refused: {what}; run migrate --yes to accept, or change the retention in the spec")
    log(f"{what}: accepted (--yes)")
