"""The one gate for SQL and settings that did not come from the project itself.

Three callers: the read-only SQL interface (`/clickhouse`, an analyst's query and URL
settings), the dashboards `serve` draws (a panel's or a variable's SQL: a custom or
imported definition is the user's text) and `check` (every dashboard query, before it
runs on chdb). It lives in the renderer's package because `check` is here and the
renderer imports nothing from the runtime.

Everything is an allow-list, because the engine's read-only modes leave doors open on
chdb (measured on chdb 4.4 / ClickHouse 26.9): readonly=1 lets several statements, KILL
QUERY, SYSTEM, INTO OUTFILE, file() and python() through, and readonly=2 (the
dashboards') also url(), remote(), file() as a table and a SETTINGS clause. So:

- a statement: exactly one (the engine's formatQuery says), of a kind in STATEMENTS
  (EXPLAIN AST names it); no SETTINGS clause anywhere (it could raise a limit or name a
  file); no INTO OUTFILE (writes a file); table functions only from TABLE_FUNCTIONS;
  no file() (reads any file); a FORMAT clause only from FORMATS.
- a URL setting: only from SETTINGS, and never one that names a path, a URL or a schema
  (PATHS), whatever SETTINGS says; the limits only lowered (a higher value is held at the bound), to a positive value.
- an output format: only from FORMATS. Template, CustomSeparated, Protobuf, CapnProto and
  their kin read or write schema files, so none of them is there.
- Grafana's ad hoc filters (table_filters): the one SETTINGS clause let through, exactly as
  the ClickHouse plugin appends it, ` settings additional_table_filters={'<table>' : '<condition>'}`.
  Its value is SQL an editor of the dashboard types, so the condition may only be columns and
  literals joined by FILTER_FUNCTIONS (no subquery, no table, no other function: it cannot read
  another table); it is then set on the session, and the query runs without the clause.
- a caller with forced filters (dashboards; /clickhouse refuses them): check_reads, only a
  SELECT whose every table, as the parser's tree names it, is one the filter names.
"""
from __future__ import annotations

import re
from typing import Callable

from .sql import string_literal

TEMPLATE = "clickhouse/runtime/sql_gate.sql.j2"
READONLY, BAD_ARGUMENTS = 164, 36
WHERE = "on the read-only SQL interface and in dashboards"

# Statement kinds, as EXPLAIN AST names them: SELECT (with UNION, INTERSECT, WITH), EXPLAIN,
# SHOW TABLES/DATABASES/SETTINGS (all ShowTables), SHOW COLUMNS, DESCRIBE, EXISTS, SHOW CREATE.
STATEMENTS = frozenset({"SelectWithUnionQuery", "Explain", "ShowTables", "ShowColumns", "DescribeQuery",
                        "ExistsTableQuery", "ShowCreateTableQuery"})
# Kinds whose first Identifier children are names (database, table), not the FORMAT.
_NAMED = frozenset({"ExistsTableQuery", "ShowCreateTableQuery"})
# Table functions that make rows from their arguments or read this server's own tables.
TABLE_FUNCTIONS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries",
                             "values", "null", "primes", "view", "merge"})
# Plain functions that reach past the data: file() reads any file the service can read,
# the ai*() functions (aiEmbed, aiGenerate, aiClassify, ...) call a configured network
# provider (matched by prefix in check_statement). (python, arrowstream and eval are table
# functions on chdb; named for the message.)
REFUSED_FUNCTIONS = frozenset({"file", "python", "arrowstream", "eval"})

# Output formats that need no file, URL or schema.
FORMATS = frozenset("""
    TabSeparated TabSeparatedRaw TabSeparatedWithNames TabSeparatedWithNamesAndTypes TabSeparatedRawWithNames
    TabSeparatedRawWithNamesAndTypes TSV TSVRaw TSVWithNames TSVWithNamesAndTypes TSVRawWithNames
    TSVRawWithNamesAndTypes CSV CSVWithNames CSVWithNamesAndTypes
    JSON JSONStrings JSONCompact JSONCompactStrings JSONColumns JSONCompactColumns JSONColumnsWithMetadata
    JSONEachRow JSONLines NDJSON JSONStringsEachRow JSONCompactEachRow JSONCompactEachRowWithNames
    JSONCompactEachRowWithNamesAndTypes JSONCompactStringsEachRow JSONCompactStringsEachRowWithNames
    JSONCompactStringsEachRowWithNamesAndTypes JSONObjectEachRow JSONEachRowWithProgress
    Native RowBinary RowBinaryWithNames RowBinaryWithNamesAndTypes Parquet Arrow ArrowStream ORC
    Pretty PrettyCompact PrettyCompactMonoBlock PrettySpace PrettyNoEscapes PrettyCompactNoEscapes
    PrettySpaceNoEscapes Vertical Markdown XML Values Null TSKV
""".split())

# URL settings a caller may pass: output formatting and HTTP behaviour (clickhouse-connect
# sends the last four where the server lets it). The limits are in LIMITS, `readonly`
# may only be 1 (what it is anyway).
SETTINGS = frozenset({
    "output_format_json_quote_64bit_integers", "output_format_json_quote_64bit_floats",
    "output_format_json_quote_denormals", "output_format_json_quote_decimals",
    "output_format_json_escape_forward_slashes", "output_format_json_named_tuples_as_objects",
    "output_format_json_array_of_rows", "output_format_json_validate_utf8", "output_format_write_statistics",
    "output_format_decimal_trailing_zeros", "output_format_csv_crlf_end_of_line",
    "output_format_tsv_crlf_end_of_line", "format_csv_delimiter", "output_format_arrow_string_as_string",
    "output_format_pretty_max_rows", "date_time_output_format", "date_time_input_format",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "cancel_http_readonly_queries_on_client_close", "enable_http_compression",
    "limit", "offset",  # rows of the answer; the Grafana plugin sends `limit`
})
# Settings that name a path, a URL or a schema (format_schema, output_format_schema,
# format_template_*, *_schema_registry_url, input_format_record_errors_file_path, url_base,
# ...): refused even if SETTINGS ever listed one. Matched on the name, so a new one of the
# engine's is caught (tests sweep system.settings).
PATHS = re.compile(r"schema|template|path|file|url|uri|dir|registry|s3|azure|hdfs|outfile", re.IGNORECASE)

# The suffix grafana/clickhouse-datasource v4.20.0 appends to a query for its ad hoc filters
# (src/data/adHocFilter.ts line 97): the table as its parser read it, and one single-quoted
# condition (the plugin escapes ' and \ inside as \' and \\). Nothing else may follow.
ADHOC_SUFFIX = re.compile(r"\s+settings additional_table_filters=(?P<map>\{'[A-Za-z_][A-Za-z0-9_]*"
                          r"(?:\.[A-Za-z_][A-Za-z0-9_]*)?' : '(?:[^'\\]|\\.)*'\})\s*\Z", re.DOTALL)
# What a filter's condition may call, as EXPLAIN AST names them: the plugin's operators (=, !=,
# <, >, <=, >=, LIKE, NOT LIKE, ILIKE, REGEXP, IN, NOT IN, adHocFilter.ts lines 157-181), AND
# and OR between filters, NOT, IS [NOT] NULL, a Map's key (m['k']) and a tuple of values.
FILTER_FUNCTIONS = frozenset({"equals", "notEquals", "less", "greater", "lessOrEquals", "greaterOrEquals",
                              "like", "notLike", "ilike", "notILike", "match", "in", "notIn", "and", "or",
                              "not", "isNull", "isNotNull", "arrayElement", "tuple"})
_IN = frozenset({"in", "notIn"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Refused(Exception):
    """A ClickHouse-style exception of our own: `code`, and text in ClickHouse's shape."""

    def __init__(self, code: int, message: str, name: str):
        super().__init__(f"Code: {code}. DB::Exception: {message}. ({name})")
        self.code = code


def refused(message: str) -> Refused:
    return Refused(READONLY, message, "READONLY")


# -- settings and formats ------------------------------------------------------------

def check_settings(settings: dict[str, str], limits: dict[str, tuple[float, str]]) -> dict[str, str]:
    """The settings to apply for a caller's URL `settings`: every one allowed, and every
    limit (`limits`: name -> (the bound, its spec key)) at the caller's value if lower,
    else at the bound: a value above it is held at the bound, not refused, because real
    clients send one (the Grafana plugin's clickhouse-go sends max_execution_time = its
    deadline + 5 s, context.go queryOptions). Refused: a setting off the list (403), a
    limit not a positive number (400, since ClickHouse reads 0 or a negative value as
    "no limit"), `readonly` other than 1 (403)."""
    out = {}
    for name, value in settings.items():
        shown = name[:100]
        if not _NAME.fullmatch(name):
            raise Refused(115, f"Unknown setting '{shown}'", "UNKNOWN_SETTING")
        if PATHS.search(name):
            raise refused(f"setting '{shown}' names a file, a URL or a schema and is refused on the "
                          "read-only SQL interface")
        if name == "readonly":
            if value.strip() != "1":
                raise refused(f"setting 'readonly' may only be 1 here (the SQL interface is read-only), got "
                              f"{value[:20]!r}")
            continue
        if name in limits:
            continue
        if name not in SETTINGS:
            raise refused(f"setting '{shown}' is not one a caller may pass to the read-only SQL interface "
                          f"(allowed: {', '.join(sorted(SETTINGS | set(limits)))}, and param_<name>)")
        out[name] = value
    for name, (bound, key) in limits.items():
        value = settings.get(name)
        if value is None:
            out[name] = _number_text(bound)
            continue
        number = _positive(value)
        if number is None:
            raise Refused(BAD_ARGUMENTS, f"setting '{name}' must be a positive number no larger than "
                          f"{_number_text(bound)} ({key}), got {value[:20]!r}", "BAD_ARGUMENTS")
        out[name] = value.strip() if number <= bound else _number_text(bound)
    return out


def check_format(name: str) -> str:
    """An output format a caller asked for (default_format, X-ClickHouse-Format, FORMAT)."""
    if name not in FORMATS:
        raise refused(f"output format '{name[:60]}' is not allowed {WHERE} (formats that "
                      f"take a schema or template file are refused); use one of {', '.join(sorted(FORMATS))}")
    return name


def _whole_tree(lines: list[str]) -> bool:
    """Whether EXPLAIN AST's lines form one tree whose every node has the children it
    announces ("(children N)"; none: a leaf). EXPLAIN AST prints names and aliases as they
    are, so a line break in one makes a line of the query's choosing: that line always adds a
    child to some node or leaves one short, and is caught here."""
    open_nodes: list[list[int]] = []  # [children announced, children seen] by depth
    for number, line in enumerate(lines):
        depth = len(line) - len(line.lstrip(" "))
        if (number == 0) != (depth == 0) or depth > len(open_nodes) or not line[depth:depth + 1].isalpha():
            return False
        for announced, seen in open_nodes[depth:]:
            if announced != seen:
                return False
        del open_nodes[depth:]
        if open_nodes:
            open_nodes[-1][1] += 1
        found = re.search(r" \(children (\d+)\)$", line)
        open_nodes.append([int(found.group(1)) if found else 0, 0])
    return all(announced == seen for announced, seen in open_nodes)


def _positive(text: str) -> float | None:
    try:
        number = float(text.strip())
    except ValueError:
        return None
    # At least 1: the engine rounds a fraction of a second down to 0, which is no limit at all.
    return number if 1 <= number < float("inf") else None


def _number_text(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


# -- statements -----------------------------------------------------------------------

def statements() -> dict[str, str]:
    from .render import environment
    from .sql import parse

    text = environment().get_template(TEMPLATE).render()
    return {s.name: s.sql for s in parse(text, TEMPLATE).statements}


_STATEMENTS: dict[str, str] = {}


def check_statement(ask: Callable[[str, dict], str], sql: str, bind: dict | None = None) -> str | None:
    """Refuse what the module's text says, asking the engine's parser; the statement's
    FORMAT, if it has one. `ask(sql, params)` runs one statement on the engine and gives
    its answer as TabSeparatedRaw text, raising the engine's error; `bind`, the query's
    parameters, reach it as the caller gave them."""
    if not _STATEMENTS:
        _STATEMENTS.update(statements())
    # One statement, or the engine's syntax error. The text goes in as a string literal, so
    # the gate passes no parameters of its own and each engine client escapes nothing twice.
    ask(_STATEMENTS["single_statement"].replace("{query:String}", string_literal(sql)), {})
    lines = ask(f"{_STATEMENTS['explain_ast']} {sql}", bind or {}).splitlines()
    if not lines or not re.fullmatch(r"\w+.*", lines[0]) or not _whole_tree(lines):
        raise refused(f"a query whose structure could not be checked is refused {WHERE} (a line break or "
                      "control character in a name or alias?)")
    top = lines[0].split()
    if top[0] not in STATEMENTS:
        raise refused(f"only SELECT, EXPLAIN, SHOW, DESCRIBE and EXISTS run {WHERE}, "
                      f"not {top[0].removesuffix('Query')}")
    output_format = None
    # "ExistsTableQuery db t (children 3)": db and t are the first Identifier children.
    names_left = len(re.sub(r"\(.*", "", lines[0]).split()) - 1 if top[0] in _NAMED else 0
    parents: list[str] = []  # the kind of each ancestor of the current line, by depth
    for line in lines:
        depth = len(line) - len(line.lstrip(" "))
        words = line.split()
        del parents[depth:]
        parent = parents[-1] if parents else ""
        parents.append(words[0])
        if "TableOverride" in words[0]:
            raise refused(f"TABLE OVERRIDE is refused {WHERE} (its table functions reach the network)")
        if words[0] == "Set":
            raise refused(f"a SETTINGS clause is refused {WHERE} (it could raise the "
                          "limits or name a file); pass output settings as URL parameters")
        if words[0] == "Function" and len(words) > 1:
            name = words[1].lower()
            if parent == "TableExpression" and name not in TABLE_FUNCTIONS:
                raise refused(f"table function {words[1]}() is refused {WHERE} (it reaches "
                              f"files, the network or the process); allowed: {', '.join(sorted(TABLE_FUNCTIONS))}")
            if name in REFUSED_FUNCTIONS or name.startswith("ai"):
                raise refused(f"{words[1]}() reaches the server's files, memory or SQL outside the query and is "
                              f"refused {WHERE}")
        if parent in STATEMENTS and words[0] == "Literal":
            raise refused(f"INTO OUTFILE writes a file on the server and is refused {WHERE}")
        if depth == 1 and words[0] == "Identifier" and len(words) > 1:
            if names_left:
                names_left -= 1
            else:
                output_format = check_format(words[1])
    return output_format


# -- what a caller with forced filters reads --------------------------------------------

ACCESS_DENIED = 497
# Table functions that make rows from their arguments alone (merge() and view() read tables).
ROW_FUNCTIONS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries",
                           "values", "null", "primes"})
# The functions whose second argument, a bare name, is a table (x IN t): in, notIn, globalIn,
# nullIn, ... and their *IgnoreSet forms (red-teamed: inIgnoreSet read a table whole).
_IN_TABLE = re.compile(r"(global)?(not)?(null)?in(ignoreset)?", re.IGNORECASE)
# Functions that read a dictionary, a Join table or the server's settings by name.
_NAMED_READS = ("dict", "joinget", "naivebayesclassifier", "getserversetting", "getmergetreesetting", "getmacro",
                "globalvariable", "hascolumnintable")
_CTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def filtered_tables(filters: str) -> frozenset[str]:
    """The tables ("db.table") an additional_table_filters value names: its map's keys. A key
    with a quote or backslash escaped in it is not read, so it stays off the list (fail closed)."""
    pairs = re.findall(r"'((?:[^'\\]|\\.)*)'\s*:\s*'(?:[^'\\]|\\.)*'", filters)
    return frozenset(key for key in pairs if "\\" not in key)


def check_reads(ask: Callable[[str, dict], str], sql: str, filtered: frozenset[str], who: str) -> None:
    """Refuse (ACCESS_DENIED) a query of a caller with forced filters that reads anything their
    filters do not cover: an allow-list, because ClickHouse adds a filter only to the tables it
    names and a custom panel's SQL may read any other. Call check_statement first.

    Nothing of the query runs here: the parser's tree (EXPLAIN AST) names every table read, in
    FROM and JOIN, in subqueries and as `x IN t`. A qualified name must be one of `filtered`
    (filtered_tables()) or system.one; a bare name is a CTE's (the tree does not print CTE
    names), so it must be a plain name and not a table of the current database. Table functions
    only from ROW_FUNCTIONS; no function that reads by name (_NAMED_READS: a dictionary, a Join
    table, the server's settings); any other dotted name that is a table must be one of
    `filtered` too (a function taking a table, as inIgnoreSet does).
    An analyser's tree (EXPLAIN QUERY TREE) resolves names better but runs scalar subqueries
    while analysing: red-teamed, that read any table unfiltered through the refusal's error
    code, and its dump of expanded aliases took gigabytes."""
    if not _STATEMENTS:
        _STATEMENTS.update(statements())

    def denied(what: str) -> Refused:
        return Refused(ACCESS_DENIED, f"{who} may not run this query: {what}; their forced filters cover only "
                                      f"{', '.join(sorted(filtered))}", "ACCESS_DENIED")

    read: list[tuple[str, str]] = []  # (name, how) where the tree has a table
    named: set[str] = set()  # every other name: a column, an alias, or a table a function takes
    lines = ask(f"{_STATEMENTS['explain_ast']} {sql}", {}).splitlines()
    if not lines or lines[0].split()[0] != "SelectWithUnionQuery" or not _whole_tree(lines):
        raise denied("only a SELECT runs")
    ancestors: list[list] = []  # of the current line: [kind, name, children seen so far]
    for line in lines:
        depth = len(line) - len(line.lstrip(" "))
        kind, _, rest = line.strip().partition(" ")
        name = re.sub(r" \((?:alias .*|children \d+)\)$", "", rest)
        del ancestors[depth:]
        position = ancestors[-1][2] if ancestors else 0  # among its parent's children
        if ancestors:
            ancestors[-1][2] += 1
        function = ancestors[-2][1] if len(ancestors) >= 2 and ancestors[-2][0] == "Function" else ""
        if kind == "TableIdentifier":
            read.append((name, ""))
        elif kind == "Identifier" and _IN_TABLE.fullmatch(function) and position == 1:
            read.append((name, " (IN)"))
        elif kind == "Identifier":
            named.add(name)
        elif kind == "Function":
            if ancestors and ancestors[-1][0] == "TableExpression" and name.lower() not in ROW_FUNCTIONS:
                raise denied(f"it reads table function {name}()")
            if name.lower().startswith(_NAMED_READS):
                raise denied(f"it calls {name}()")
        ancestors.append([kind, name, 0])
    # Which names are tables ("db.table", or a table of the current database), in one question.
    tables = set(ask(_STATEMENTS["names_of_tables"], {"names": sorted(named | {n for n, _ in read})}).splitlines())
    # Any other name that is a table, wherever it stands, is read too: a function given one reads
    # it whole, and `WITH t AS x ... IN x` reads t (red-teamed); a column sharing a table's name
    # is refused with them.
    for name, how in read + [(n, "") for n in sorted(named & tables)]:
        if "." in name:
            if name not in filtered and name != "system.one":
                raise denied(f"it reads {name}{how}")
        elif not _CTE_NAME.fullmatch(name):
            raise denied(f"it reads {name!r}{how}")
        elif name in tables:  # a bare name is a CTE's, unless the current database has it
            raise denied(f"it reads {name}{how}, a table of the current database (qualify it, or name "
                         "the CTE differently)")


# -- Grafana's ad hoc filters ---------------------------------------------------------

def table_filters(ask: Callable[[str, dict], str], sql: str) -> str:
    """`sql` without the Grafana plugin's ad hoc filter suffix, once its condition has passed
    check_filter and is set on the session (ask runs the SET: call this before readonly=1);
    `sql` itself when it has no such suffix (then check_statement refuses any SETTINGS clause).
    The condition checked is the one the engine sets: both read the plugin's map the same way."""
    found = ADHOC_SUFFIX.search(sql)
    if not found:
        return sql
    if not _STATEMENTS:
        _STATEMENTS.update(statements())
    params = {"filters": found.group("map")}
    entries, table, condition = ask(_STATEMENTS["table_filters"], params).removesuffix("\n").split("\t", 2)
    if entries != "1" or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?", table):
        raise refused(f"additional_table_filters takes one table and its condition {WHERE}")
    check_filter(ask, condition)
    ask(_STATEMENTS["set_table_filters"], params)
    return sql[:found.start()]


def check_filter(ask: Callable[[str, dict], str], condition: str) -> None:
    """Refuse an ad hoc filter's condition that is more than columns and literals joined by
    FILTER_FUNCTIONS: a subquery, a table (also `x IN table`), a table function or any other
    function could read what the dashboards may not, or reach past the data."""
    # In parentheses: one expression, as the engine parses the setting's (ParserExpression), and no
    # room for a FROM or a SETTINGS clause of its own (EXPLAIN runs before readonly=1 is set).
    select = f"SELECT ({condition}\n)"
    ask(_STATEMENTS["single_statement"].replace("{query:String}", string_literal(select)), {})
    lines = ask(f"{_STATEMENTS['explain_ast']} {select}", {}).splitlines()
    # SelectWithUnionQuery > ExpressionList > SelectQuery > ExpressionList > the condition, one of each.
    head = ["SelectWithUnionQuery (children 1)", " ExpressionList (children 1)", "  SelectQuery (children 1)",
            "   ExpressionList (children 1)"]
    if lines[:4] != head or not _whole_tree(lines):
        raise refused(f"an ad hoc filter must be one condition on the table's columns {WHERE}, "
                      f"got {condition[:100]!r}")
    ancestors: list[list] = []  # of the current line: [kind, name, children seen so far]
    for line in lines[4:]:
        depth = len(line) - len(line.lstrip(" ")) - 4
        kind, name = (line.split() + [""])[:2]
        del ancestors[depth:]
        position = ancestors[-1][2] if ancestors else 0  # among its parent's children
        if ancestors:
            ancestors[-1][2] += 1
        # A function's arguments are the children of its one ExpressionList.
        function = ancestors[-2][1] if len(ancestors) >= 2 and ancestors[-2][0] == "Function" else ""
        if kind not in ("Function", "ExpressionList", "Identifier", "Literal"):
            raise refused(f"an ad hoc filter may only compare columns with values {WHERE} "
                          f"(no subquery, table or {kind})")
        if kind == "Function" and name not in FILTER_FUNCTIONS:
            raise refused(f"{name}() is not allowed in an ad hoc filter {WHERE}; allowed: "
                          f"{', '.join(sorted(FILTER_FUNCTIONS))}")
        if kind == "Identifier" and function in _IN and position == 1:
            raise refused(f"IN {name} reads a table and is refused in an ad hoc filter {WHERE}; list the values")
        ancestors.append([kind, name, 0])
