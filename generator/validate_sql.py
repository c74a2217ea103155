"""Execute every rendered .sql file of a deploy tree on chdb (the real ClickHouse engine).

    python -m cvat_analytics_generator.validate_sql DIR

Runs in its own process on a fresh temporary chdb path, because a process can open one
chdb path for its whole life (docs/architecture.md, Data flow): the caller (`cvat-analytics check`, the test
session) may already hold one. Migrations run first, in order, then every other .sql file
in path order. Query parameters (`{name:Type}`) are bound to a neutral value of their
type. Then every dashboard query (grafana/dashboards/*.json: panels and variables), its
macros expanded as the Grafana plugin does with "All" selected, over the last 7 days, so a
broken panel (a custom one too) fails `check`, not the page. A dashboard's SQL may be the
user's (a custom or imported definition): it passes the SQL gate (sql_gate.py: what
`serve` refuses, `check` refuses, expanded with "All" and with one value per variable),
and runs only then, in a read-only session. Prints one line per failing statement,
"relpath: statement N: error" or "relpath: panel N (title): error"; exit 1 if any.

The cluster render's statements need a cluster (Keeper, the {shard} and {replica} macros,
a `remote_servers` entry) that chdb does not have. Such a statement must parse on the
engine (formatQuery), and its single-node equivalent must execute: a Replicated database
as Atomic, a Replicated*MergeTree as its *MergeTree, a Distributed table as a Merge table
over its local table, with its sharding key evaluated over that local table.
"""
from __future__ import annotations

import json
import re
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .sql import SqlTemplateError, parse
from .sql_gate import Refused, check_statement

MIGRATIONS = "clickhouse/migrations/"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([^{}]+)\}")
_REPLICATED_DATABASE = re.compile(r"ENGINE\s*=\s*Replicated\s*\((?:[^()']|'[^']*')*\)")
_REPLICATED_TABLE = re.compile(r"\bReplicated(?=\w*MergeTree\b)")
_DISTRIBUTED = re.compile(r"\bDistributed\(\s*\w+\s*,\s*(?P<db>[^,\s]+)\s*,\s*(?P<table>\w+)\s*"
                          r"(?:,\s*(?P<key>.+?))?\)\s*(?=;|$)", re.DOTALL)


def single_node_equivalent(statement: str) -> tuple[str, list[str]]:
    """The statement as one server without a cluster runs it, and statements that check
    what the rewrite left out (a Distributed table's sharding key)."""
    checks = []
    distributed = _DISTRIBUTED.search(statement)
    if distributed:
        db, table, key = distributed["db"], distributed["table"], distributed["key"]
        statement = statement[:distributed.start()] + f"Merge({db}, '^{table}$')" + statement[distributed.end():]
        if key:
            checks.append(f"SELECT {key} FROM {db}.{table} LIMIT 0")
    statement = _REPLICATED_DATABASE.sub("ENGINE = Atomic", statement)
    return _REPLICATED_TABLE.sub("", statement), checks


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


def run(root: Path, parse_only: bool = False) -> list[str]:
    """With parse_only, every statement is only parsed (statements that need a cluster to run,
    such as migrate's plan for one: cvat_analytics/cluster_migrate.py)."""
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
                    equivalent, checks = single_node_equivalent(statement)
                    if parse_only:
                        try:
                            session.query("SELECT formatQuery({sql:String})", "Null", params={"sql": _escaped(statement)})
                        except Exception as exc:
                            problems.append(f"{rel}: statement {n} does not parse on ClickHouse: {_first_line(exc)}")
                        continue
                    if equivalent != statement:
                        try:
                            session.query("SELECT formatQuery({sql:String})", "Null", params={"sql": _escaped(statement)})
                        except Exception as exc:
                            problems.append(f"{rel}: statement {n} does not parse on ClickHouse: {_first_line(exc)}")
                            continue
                    params = {name: neutral_value(t) for name, t in _PARAM.findall(equivalent)}
                    try:
                        for sql in [equivalent, *checks]:
                            session.query(sql, "Null", params=params)
                    except Exception as exc:  # chdb raises ChdbError with ClickHouse's message
                        what = " (its single-node equivalent)" if equivalent != statement else ""
                        problems.append(f"{rel}: statement {n} does not execute on ClickHouse{what}: "
                                        f"{_first_line(exc)}")
            if not parse_only:
                problems += _dashboard_problems(root, session)
        finally:
            session.close()
    return problems


def _escaped(text: str) -> str:
    """A query parameter's text form (ClickHouse reads it in the escaped format)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]


PANEL_SECONDS = 30


def _dashboard_problems(root: Path, session) -> list[str]:
    from .contracts import DASHBOARDS, dashboard_queries
    from .grafana_macros import ALL, Variable, expand

    files = {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in (root / DASHBOARDS).glob("*.json")}
    names = {rel: [v.get("name") for v in (json.loads(text).get("templating") or {}).get("list") or []]
             for rel, text in files.items()}
    # The alert rules' SQL (alerts.alert_queries) is Grafana's too: the same gate, run read-only.
    files |= {str(p.relative_to(root)): p.read_text(encoding="utf-8")
              for p in (root / "grafana/provisioning/alerting").glob("*.yaml")}
    time_to = datetime.now(timezone.utc).replace(microsecond=0)
    time_from = time_to - timedelta(days=7)

    def ask(text: str, params: dict) -> str:
        return session.query(text, "TabSeparatedRaw", params=params).bytes().decode()

    # Each distinct text is asked once (its answer kept for every panel that has it): a variable's
    # query is often in several dashboards, and without variables both expansions are the same.
    refused: dict[str, str | None] = {}

    def gate(text: str) -> str | None:
        if text not in refused:
            try:  # the gate asks only the parser (formatQuery, EXPLAIN AST): nothing of the query runs
                check_statement(ask, text)
                refused[text] = None
            except Refused as exc:
                refused[text] = _first_line(exc)
            except Exception:
                refused[text] = None  # a syntax error: the run below names it
        return refused[text]

    problems, passed = [], []
    for rel, what, sql in dashboard_queries(files):
        every = {name: Variable(ALL) for name in names.get(rel, []) if name}
        one = {name: Variable(["0"]) for name in names.get(rel, []) if name}  # $__conditionalAll's other branch
        with_all = expand(sql, time_from, time_to, 3600, every)
        reason = gate(expand(sql, time_from, time_to, 3600, one)) or gate(with_all)
        if reason:
            problems.append(f"{rel}: {what} is refused: {reason}")
            continue
        passed.append((rel, what, with_all))
    # A panel's query runs on the empty store check makes: seconds are plenty, and a user's
    # panel that would run for ever (numbers(1e15)) fails here instead of hanging check.
    session.query(f"SET max_execution_time = {PANEL_SECONDS}", "Null")
    # The .sql files ran (queries/working_time_wait.sql has waited for a refresh and raised its
    # error, if any); a scheduled refresh of the empty store now would only cost CPU.
    session.query("SYSTEM STOP VIEWS", "Null")
    session.query("SET readonly = 1", "Null")  # the last statements of this session: none of them writes
    failed: dict[str, str | None] = {}
    for rel, what, sql in passed:
        if sql not in failed:
            try:
                session.query(sql, "Null")
                failed[sql] = None
            except Exception as exc:
                failed[sql] = _first_line(exc)
        if failed[sql]:
            problems.append(f"{rel}: {what} does not execute on ClickHouse: {failed[sql]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parse_only = argv[:1] == ["--parse-only"]
    argv = argv[1:] if parse_only else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m cvat_analytics_generator.validate_sql [--parse-only] DIR", file=sys.stderr)
        return 2
    problems = run(Path(argv[0]), parse_only)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
