"""The tables each SQL query reads, as ClickHouse's own parser sees them.

    python -m cvat_analytics_generator.tables_read  < queries.json  > tables.json

Input: a JSON list of SQL texts (Grafana macros and ${variables} allowed). Output: a JSON
list, one entry per query: {"tables": ["db.table" or "table", ...], "table_functions":
[...]} or {"error": "..."}. Runs `EXPLAIN AST` on chdb (parsing only, no table needs to
exist) in its own process, because a process can open one chdb path for its whole life
and the caller may hold one. The macros are replaced by a literal first: only the
query's shape matters here, and Grafana never sends them to ClickHouse.
"""
from __future__ import annotations

import json
import re
import sys

_MACRO = re.compile(r"\$__[A-Za-z_]+")
_BRACED_VARIABLE = re.compile(r"\$\{[^}]*\}")
_VARIABLE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")


def parseable(sql: str) -> str:
    """`sql` with every macro call, macro and variable replaced by the literal 0."""
    out, i = [], 0
    while True:
        match = _MACRO.search(sql, i)
        if not match:
            break
        out.append(sql[i:match.start()])
        end = match.end()
        if end < len(sql) and sql[end] == "(":
            depth = 0
            for j in range(end, len(sql)):
                depth += {"(": 1, ")": -1}.get(sql[j], 0)
                if depth == 0:
                    end = j + 1
                    break
        out.append("0")
        i = end
    out.append(sql[i:])
    return _VARIABLE.sub("0", _BRACED_VARIABLE.sub("0", "".join(out)))


def tables_of(session, sql: str) -> dict:
    try:
        ast = session.query("EXPLAIN AST " + parseable(sql), "TSV").bytes().decode()
    except Exception as exc:  # chdb raises with ClickHouse's message
        return {"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}
    tables, functions = [], []
    lines = ast.splitlines()
    for n, line in enumerate(lines):
        text = line.strip()
        if text.startswith("TableIdentifier "):
            tables.append(text.split()[1])
        elif text == "TableExpression (children 1)" and n + 1 < len(lines):
            inner = lines[n + 1].strip()
            if inner.startswith("Function "):
                functions.append(inner.split()[1])
    return {"tables": sorted(set(tables)), "table_functions": sorted(set(functions))}


def main() -> int:
    import tempfile

    import chdb.session

    queries = json.load(sys.stdin)
    with tempfile.TemporaryDirectory(prefix="cvat-analytics-ast-") as data:
        session = chdb.session.Session(data)
        try:
            json.dump([tables_of(session, sql) for sql in queries], sys.stdout)
        finally:
            session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
