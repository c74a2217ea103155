"""The Grafana ClickHouse plugin's macros and Grafana's variable interpolation, in Python.

Grafana never sends `$__timeFilter(...)` or `${users}` to ClickHouse: the plugin's
frontend first applies `$__conditionalAll`, Grafana replaces the variables, and the
plugin's backend expands the time macros (grafana/clickhouse-datasource
CHDatasource.ts and pkg/macros/macros.go, v4.20). `expand` does the same three steps,
so the tests and the embedded dashboards run the SQL Grafana runs, with one
difference on purpose: variable values are put in LAST, after the macros, and never
scanned again. (Grafana puts them in before its backend expands macros, so a stored
value holding `$__timeFilter(` would be expanded, and a nested one doubles the SQL
per level.) Values go in as text in Grafana's format: callers must only pass values
they validated and escaped (the embedded service does, see dashboards.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

ALL = "$__all"  # Grafana's value of a variable with "All" selected


@dataclass
class Variable:
    """A template variable's current state: `value` is ALL, one string, or a list of strings
    (a multi-value variable always holds a list, even with one value selected)."""
    value: str | list[str]
    all_value: str | None = None     # the variable's "Custom all value"
    options: list[str] = field(default_factory=list)  # what "All" means without all_value

    def is_all(self) -> bool:
        return self.value == ALL or self.value == [ALL]


def expand(sql: str, time_from: datetime, time_to: datetime, interval_s: int = 60,
           variables: dict[str, Variable] | None = None) -> str:
    """`sql` as the plugin sends it to ClickHouse for this time range, panel interval and variables."""
    variables = variables or {}
    sql = _conditional_all(sql, variables)
    values: list[str] = []
    sql = _interpolate(sql, variables, time_from, time_to, interval_s, values)
    sql = _backend_macros(sql, time_from, time_to, interval_s)
    # One pass: a value's text is never read as a placeholder, a variable or a macro.
    return _PLACEHOLDER.sub(lambda m: values[int(m.group(1))], sql)


# A value's place until the macros are done: NUL cannot occur in a definition's SQL
# (the loader refuses control characters), so no SQL text can look like one.
_PLACEHOLDER = re.compile("\x00" r"(\d+)" "\x00")


# --- step 1: $__conditionalAll(condition, $var) (frontend, CHDatasource.applyConditionalAll)

def _conditional_all(sql: str, variables: dict[str, Variable]) -> str:
    macro = "$__conditionalAll("
    index = sql.rfind(macro)
    while index != -1:
        args, end = _args(sql, index + len(macro) - 1)
        if len(args) != 2:
            return sql  # the plugin leaves a malformed call alone
        phrase = args[0]
        name = re.search(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+", args[1].strip())
        if name:
            var = variables.get(name.group(0))
            # The plugin tests current.value.toString() against '' and '$__all'.
            current = "" if var is None else (",".join(var.value) if isinstance(var.value, list) else var.value)
            if current in ("", ALL):
                phrase = "1=1"
        sql = sql[:index] + phrase + sql[end:]
        index = sql.rfind(macro)
    return sql


# --- step 2: Grafana's variable interpolation (templateSrv.replace with the plugin's format)

_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]")


def _format(value: str | list[str]) -> str:
    # CHDatasource.format: a list becomes 'a','b'; a single value goes in as it is.
    if isinstance(value, list):
        return "'" + "','".join(value) + "'"
    return value


def _interpolate(sql: str, variables: dict[str, Variable], time_from: datetime, time_to: datetime,
                 interval_s: int, values: list[str]) -> str:
    """Builtins go in as text; each variable's value is kept in `values` and a placeholder
    goes in its place (see expand)."""
    builtins = {
        "__from": str(_ms(time_from)), "__to": str(_ms(time_to)),
        "__interval": _grafana_interval(interval_s), "__interval_ms": str(max(interval_s, 1) * 1000),
    }

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in variables:
            var = variables[name]
            if var.is_all():
                text = var.all_value if var.all_value is not None else _format(list(var.options))
            else:
                text = _format(var.value)
            values.append(text)
            return f"\x00{len(values) - 1}\x00"
        if name in builtins:
            return builtins[name]
        return match.group(0)  # not a variable: the backend macros ($__timeFilter, ...) stay

    return _VAR.sub(replace, sql)


def _grafana_interval(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 1)}s"


# --- step 3: the backend macros (pkg/macros/macros.go)

def _backend_macros(sql: str, time_from: datetime, time_to: datetime, interval_s: int) -> str:
    f_s, t_s = int(time_from.timestamp()), int(time_to.timestamp())
    f_ms, t_ms = _ms(time_from), _ms(time_to)
    f_d, t_d = _utc(time_from).strftime("%Y-%m-%d"), _utc(time_to).strftime("%Y-%m-%d")
    seconds = max(int(interval_s), 1)

    def time_filter(c):
        return f"{c} >= toDateTime({f_s}) AND {c} <= toDateTime({t_s})"

    def date_filter(c):
        return f"{c} >= toDate('{f_d}') AND {c} <= toDate('{t_d}')"

    with_args = {
        "timeFilter": lambda c: time_filter(c),
        "timeFilter_ms": lambda c: f"{c} >= fromUnixTimestamp64Milli({f_ms}) AND {c} <= fromUnixTimestamp64Milli({t_ms})",
        "dateFilter": lambda c: date_filter(c),
        "dateTimeFilter": lambda d, t: f"({date_filter(d)}) AND ({time_filter(t)})",
        "dt": lambda d, t: f"({date_filter(d)}) AND ({time_filter(t)})",
        "timeInterval": lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {seconds} second)",
        "timeInterval_ms": lambda c: f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {seconds * 1000} millisecond)",
        "timeFrom": lambda c: f"{c} >= toDateTime({f_s})",
        "timeTo": lambda c: f"{c} <= toDateTime({t_s})",
        "timeGroup": lambda c, step: f"toStartOfInterval(toDateTime({c}), INTERVAL {_duration_s(step)} second)",
    }
    # Innermost first: the last macro call in the text cannot contain another one.
    call = re.compile(r"\$__(" + "|".join(sorted(with_args, key=len, reverse=True)) + r")\(")
    while True:
        matches = list(call.finditer(sql))
        if not matches:
            break
        m = matches[-1]
        args, end = _args(sql, m.end() - 1)
        sql = sql[:m.start()] + with_args[m.group(1)](*[a.strip() for a in args]) + sql[end:]

    plain = {
        "fromTime_ms": f"fromUnixTimestamp64Milli({f_ms})", "toTime_ms": f"fromUnixTimestamp64Milli({t_ms})",
        "fromTime": f"toDateTime({f_s})", "toTime": f"toDateTime({t_s})",
        "interval_s": str(seconds),
    }
    return re.sub(r"\$__(fromTime_ms|toTime_ms|fromTime|toTime|interval_s)\b", lambda m: plain[m.group(1)], sql)


def _args(sql: str, open_paren: int) -> tuple[list[str], int]:
    """The comma-separated arguments of the call whose '(' is at open_paren, and the index after ')'."""
    depth, quote, start, args = 0, None, open_paren + 1, []
    for i in range(open_paren, len(sql)):
        ch = sql[i]
        if quote:
            if ch == "\\":
                continue
            if ch == quote and sql[i - 1] != "\\":
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i])
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append(sql[start:i])
            start = i + 1
    raise ValueError(f"unbalanced parentheses in macro call at {open_paren}")


def _duration_s(text: str) -> int:
    m = re.fullmatch(r"'?(\d+)([smhdw]?)'?", text.strip())
    if not m:
        raise ValueError(f"not a duration: {text}")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def _ms(t: datetime) -> int:
    return int(round(t.timestamp() * 1000))


def _utc(t: datetime) -> datetime:
    return t.astimezone(timezone.utc)
