"""The bench's SQL: templates in bench/templates/, values bound by ClickHouse.

Each template is one statement (panels.sql.j2 holds pairs, see `panels`). Jinja fills in
only the column list (CVAT's 18, in CVAT's order); every value and database name is a
`{name:Type}` parameter the caller passes with the query.
"""
from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from cvat_analytics_generator.spec import CVAT_COLUMNS

TEMPLATES = Path(__file__).resolve().parent / "templates"
CVAT_DB = "cvat_original"  # the database holding CVAT's schema, beside ours

_env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True)


@cache
def sql(name: str) -> str:
    """The statement of templates/<name>.sql.j2."""
    return _env.get_template(f"{name}.sql.j2").render(columns=CVAT_COLUMNS).strip()


def run(client, name: str, **parameters):
    """Run a statement that answers with one value or none (DDL, a copy, a count)."""
    return client.command(sql(name), parameters=parameters)


def rows(client, name: str, **parameters) -> list[tuple]:
    return client.query(sql(name), parameters=parameters).result_rows


def parse_panels(text: str) -> list[dict]:
    """panels.sql.j2 -> [{name, kind, ours, cvat}]: `-- panel: <name>` starts a panel, then
    `-- kind: <kind>`, the statement on our schema after `-- ours:`, on CVAT's after `-- cvat:`."""
    panels = []
    for block in re.split(r"^-- panel: ", text, flags=re.M)[1:]:
        name, rest = block.split("\n", 1)
        kind = re.search(r"^-- kind: (\w+)", rest, re.M).group(1)
        ours = rest.split("-- ours:\n", 1)[1].split("-- cvat:\n", 1)[0].strip()
        cvat = rest.split("-- cvat:\n", 1)[1].strip()
        panels.append({"name": name.strip(), "kind": kind, "ours": ours, "cvat": cvat})
    return panels


def panels() -> list[dict]:
    return parse_panels(sql("panels"))
