"""SQL text: quoting for values that land in SQL, and the one way a .sql template holds
several statements. Used by the renderer and by the runtime (which imports it from here).

The convention for a multi-statement .sql template (rendered text shown):

    -- reapply: on-change                 <- file options: `-- key: value` lines at the top
    -- Prose comments say why.               (lowercase key; the first other line ends them)

    -- name: clear_stage                  <- optional: names the statement that follows
    TRUNCATE TABLE cvat.stage;            <- a statement ends with `;` (last one may omit it)

    -- name: fill_stage
    INSERT INTO cvat.stage
    SELECT 'a;b' FROM cvat.events;        <- `;` inside quotes or comments ends nothing

- A `-- name: <id>` line stands before a statement, among the comments that lead it;
  ids are `[A-Za-z_][A-Za-z0-9_.]*` and unique in a file. A name inside a statement, or
  with no statement after it, is an error (a forgotten `;`).
- Statement text has its whole-line comments removed and is stripped; trailing
  `-- comments` on a line of SQL stay (ClickHouse ignores them).
- Each caller says which options it knows (`parse(text, options={"reapply"})`); an
  unknown one is an error, so a typo does not pass silently.
- Quoting is ClickHouse's: '...' strings (with \\' and '' escapes), "..." and `...`
  identifiers, `--` line comments and /* */ block comments.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPTION = re.compile(r"--[ \t]*([a-z][a-z0-9_]*):[ \t]*(\S.*?)[ \t]*")
_NAME = re.compile(r"--[ \t]*name:(.*)")
_NAME_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# Runs the splitter takes in one step, not a character at a time (it was most of a render's
# time): text with nothing that opens a quote or a comment or ends a statement, and a quoted
# string's text up to its closing quote or a backslash.
_PLAIN_RUN = re.compile(r"[^'\"`;/-]+")
_QUOTED_RUN = {q: re.compile(rf"[^\\{q}]+") for q in "'\"`"}


def ident(name) -> str:
    """A ClickHouse identifier in backticks; only plain names are accepted (the spec
    schema ensures it), so nothing else can reach SQL as a name."""
    if not _IDENT.fullmatch(str(name)):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f"`{name}`"


def escape_string(value) -> str:
    """The inside of a ClickHouse string literal (for text that goes between quotes
    someone else writes, e.g. Grafana's '${var}' format)."""
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def string_literal(value) -> str:
    """A ClickHouse string literal."""
    return f"'{escape_string(value)}'"


class SqlTemplateError(ValueError):
    """A .sql template that does not follow the convention above; says file and line."""


@dataclass
class Statement:
    sql: str
    name: str | None
    line: int  # where the statement's first SQL line is, 1-based


@dataclass
class SqlFile:
    options: dict[str, str] = field(default_factory=dict)
    statements: list[Statement] = field(default_factory=list)

    def named(self, name: str) -> str:
        """The SQL of the statement called `name`."""
        for s in self.statements:
            if s.name == name:
                return s.sql
        raise KeyError(name)


def parse(text: str, source: str = "<sql>", options: set[str] | frozenset[str] | None = None) -> SqlFile:
    """A rendered template as its options and statements. `options`: the option keys the
    caller knows (None: accept any)."""
    lines = text.splitlines()
    out = SqlFile()
    n = 0
    while n < len(lines) and (m := _OPTION.fullmatch(lines[n].strip())) and m.group(1) != "name":
        key, value = m.groups()
        if options is not None and key not in options:
            known = ", ".join(sorted(options)) or "none"
            raise SqlTemplateError(f"{source}:{n + 1}: unknown option {key!r} (known: {known})")
        if key in out.options:
            raise SqlTemplateError(f"{source}:{n + 1}: option {key!r} is given twice")
        out.options[key] = value
        n += 1
    for sql, name, name_line, line in _split(lines, n, source):
        if sql:
            if name and any(s.name == name for s in out.statements):
                raise SqlTemplateError(f"{source}:{name_line}: the name {name!r} is used twice")
            out.statements.append(Statement(sql, name, line))
        elif name:
            raise SqlTemplateError(f"{source}:{name_line}: `-- name: {name}` has no statement after it")
    return out


def split_statements(text: str) -> list[str]:
    """The statements of a template, in order (options and names dropped)."""
    return [s.sql for s in parse(text).statements]


def _split(lines: list[str], start: int, source: str):
    """Yield (sql, name, name_line, first_sql_line) per statement; sql may be empty."""
    quote = None  # the open quote character, or "*" inside a block comment
    kept: list[str] = []  # lines of the statement being read
    in_statement = False  # SQL seen since the last `;` (comments before it are dropped)
    name, name_line, first = None, 0, 0
    for n in range(start, len(lines)):
        line, pos, piece = lines[n], 0, []
        if quote is None and line.strip().startswith("--"):
            m = _NAME.fullmatch(line.strip())
            if m:
                if in_statement:
                    raise SqlTemplateError(f"{source}:{n + 1}: `-- name:` inside a statement "
                                           "(does the statement before it end with `;`?)")
                if not _NAME_ID.fullmatch(m.group(1).strip()):
                    raise SqlTemplateError(f"{source}:{n + 1}: a statement name is an id like "
                                           f"fill_stage, not {m.group(1).strip()!r}")
                if name:
                    raise SqlTemplateError(f"{source}:{n + 1}: a second name before one statement")
                name, name_line = m.group(1).strip(), n + 1
            continue  # a whole-line comment is not part of the statement
        while pos < len(line):
            ch = line[pos]
            if quote == "*":
                end = line.find("*/", pos)
                stop = len(line) if end < 0 else end + 2
                piece.append(line[pos:stop])
                pos, quote = stop, ("*" if end < 0 else None)
            elif quote:
                if m := _QUOTED_RUN[quote].match(line, pos):
                    piece.append(m.group())
                    pos = m.end()
                    continue
                if ch == "\\" or (ch == quote and line[pos + 1:pos + 2] == quote):
                    piece.append(line[pos:pos + 2])  # an escaped or doubled quote stands for itself
                    pos += 2
                    continue
                quote = None if ch == quote else quote
                piece.append(ch)
                pos += 1
            elif line.startswith("/*", pos):
                quote = "*"
                piece.append("/*")
                pos += 2
            elif line.startswith("--", pos):
                piece.append(line[pos:])
                pos = len(line)
            elif ch == ";":
                if in_statement:
                    kept.append("".join(piece))
                    yield "\n".join(kept).strip(), name, name_line, first
                    name, name_line = None, 0
                kept, piece, in_statement, first = [], [], False, 0
                pos += 1
            elif m := _PLAIN_RUN.match(line, pos):
                run = m.group()
                if not in_statement and (stripped := run.lstrip()):
                    in_statement, first, piece, run = True, n + 1, [], stripped  # drop the comments before it
                piece.append(run)
                pos = m.end()
            else:
                if not ch.isspace() and not in_statement:
                    in_statement, first, piece = True, n + 1, []  # drop the comments before it
                quote = ch if ch in "'\"`" else None
                piece.append(ch)
                pos += 1
        if in_statement:
            kept.append("".join(piece))
    if quote and quote != "*":
        raise SqlTemplateError(f"{source}: a {quote} quote is not closed before the end of the file")
    yield ("\n".join(kept).strip() if in_statement else ""), name, name_line, first


def checksum(statements: list[str]) -> str:
    """What a migration's ledger row records (migrate and the init scripts' ledger alike):
    the statements that run, so a comment edited in the template is not a change."""
    return hashlib.sha256("".join(s + ";\n" for s in statements).encode()).hexdigest()
