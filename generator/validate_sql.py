"""Execute every rendered .sql file of a deploy tree on chdb (the real ClickHouse engine).

    python -m cvat_analytics_generator.validate_sql DIR

Runs in its own process on a fresh temporary chdb path, because a process can open one
chdb path for its whole life (see docs/architecture.md): the caller (`cvat-analytics check`, the test
session) may already hold one. Migrations run first, in order, then every other .sql file
in path order. Query parameters (`{name:Type}`) are bound to a neutral value of their
type. Then every dashboard query (grafana/dashboards/*.json: panels and variables), its
macros expanded as the Grafana plugin does with "All" selected, over the last 7 days, so a
broken panel (a custom one too) fails `check`, not the page. Prints one line per failing
statement, "relpath: statement N: error" or "relpath: panel N (title): error"; exit 1 if any.
"""
from __future__ import annotations

import json
import re
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .sql import SqlTemplateError, parse

MIGRATIONS = "clickhouse/migrations/"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([^{}]+)\}")


def neutral_value(ch_type: str) -> str:
    """A value of a ClickHouse type, in the text form query parameters take."""
    t = ch_type.strip()
    if t.startswith("Nullable("):
        return "\\N"
    if t.startswith("LowCardinality("):
        return neutral_value(t[len("LowCardinality("):-1])
    if t.startswith("Array("):
        return "[]"
    if t.startswith("DateTime"):
        return "2024-01-01 00:00:00"
    if t.startswith("Date"):
        return "2024-01-01"
    if t.startswith(("UInt", "Int", "Float", "Decimal")):
        return "0"
    if t == "Bool":
        return "false"
    return ""


def sql_files(root: Path) -> list[str]:
    rels = sorted(str(p.relative_to(root)) for p in root.rglob("*.sql") if p.is_file())
    return [r for r in rels if r.startswith(MIGRATIONS)] + [r for r in rels if not r.startswith(MIGRATIONS)]


def run(root: Path) -> list[str]:
    import chdb.session

    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cvat-analytics-sql-") as data:
        session = chdb.session.Session(data)
        try:
            for rel in sql_files(root):
                try:  # the parser the migrator uses, so what is checked is what gets executed
                    statements = [s.sql for s in parse((root / rel).read_text(encoding="utf-8"), rel).statements]
                except SqlTemplateError as exc:
                    problems.append(str(exc))
                    continue
                for n, statement in enumerate(statements, 1):
                    params = {name: neutral_value(t) for name, t in _PARAM.findall(statement)}
                    try:
                        session.query(statement, "Null", params=params)
                    except Exception as exc:  # chdb raises ChdbError with ClickHouse's message
                        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                        problems.append(f"{rel}: statement {n} does not execute on ClickHouse: {first[:400]}")
            problems += _dashboard_problems(root, session)
        finally:
            session.close()
    return problems


def _dashboard_problems(root: Path, session) -> list[str]:
    from .contracts import DASHBOARDS, dashboard_queries
    from .grafana_macros import ALL, Variable, expand

    files = {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in (root / DASHBOARDS).glob("*.json")}
    names = {rel: [v.get("name") for v in (json.loads(text).get("templating") or {}).get("list") or []]
             for rel, text in files.items()}
    time_to = datetime.now(timezone.utc).replace(microsecond=0)
    problems = []
    for rel, what, sql in dashboard_queries(files):
        variables = {name: Variable(ALL) for name in names[rel] if name}
        try:
            session.query(expand(sql, time_to - timedelta(days=7), time_to, 3600, variables), "Null")
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            problems.append(f"{rel}: {what} does not execute on ClickHouse: {first[:400]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m cvat_analytics_generator.validate_sql DIR", file=sys.stderr)
        return 2
    problems = run(Path(argv[0]))
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
