"""The dashboards in the embedded service: `serve` shows /dashboards and /dashboards/<uid>.

Same definitions (generator/dashboards/*.yaml) and same SQL as the Grafana
dashboards, expanded by grafana_macros.expand as the plugin would. What comes from
the query string is validated before it reaches SQL: ids must be integers, scopes
and sources must be known ones, free-text values (error messages) must be among the
variable's own options and are escaped; the time range is one of RANGES or ISO times
inside ClickHouse's DateTime range; a variable has at most
embedded.dashboards.max_selected_values values and a table's page number is at most
max_rows / page_rows (400 past either), and only this dashboard's own panel and variable
parameters are carried into its links (a page's size does not grow with its URL). A
panel's or a variable's SQL (a custom or imported definition is the user's text) passes the
SQL gate (cvat_analytics_generator.sql_gate: one statement, no SETTINGS clause, INTO
OUTFILE, file() or table function off its list) before it runs, and for a caller with forced
filters, reads only the tables they filter (sql_gate.check_reads); queries run read-only
(readonly=1) with the time and memory limits the spec gives Grafana's ClickHouse user
(clickhouse.dashboards_max_execution_time_s, dashboards_max_memory_usage_bytes); a page's
work is bounded by the spec's embedded.dashboards (points per series, rows per panel).

From the table to a cell: `grafana.load_all` reads the definitions (generator/dashboards/
*.yaml; {{ db }} and {{ filters }} filled in); `dashboard_page` runs each variable's SQL
for its options, then each panel (`_panel`): `grafana_macros.expand` (macros, then the
validated values), the SQL gate, `query` (the caller's forced filters as
additional_table_filters); a chart is drawn by charts.py, a table's cells by `_cell` (the
`cell` filter of dashboard_templates/dashboard.html.j2). service/dashboard_routes.py is the
HTTP door.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from urllib.parse import urlencode

import jinja2

from cvat_analytics_generator import grafana
from cvat_analytics_generator.grafana import COLUMN_VARIABLES
from cvat_analytics_generator.grafana_macros import ALL, Variable, expand
from cvat_analytics_generator.render import compiled_templates, render_template
from cvat_analytics_generator.sql import escape_string
from cvat_analytics_generator.sql_gate import ACCESS_DENIED, Refused, check_reads, check_statement, filtered_tables

from . import charts, store, times

TEMPLATES = Path(__file__).with_name("dashboard_templates")
RANGES = {"1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(days=1),
          "7d": timedelta(days=7), "30d": timedelta(days=30), "90d": timedelta(days=90)}
DEFAULT_RANGE = "7d"  # as the Grafana dashboards
# Panel intervals, like Grafana's rounding: the smallest that keeps a chart under ~150 points;
# past a week per point, whole days.
INTERVALS = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 7 * 86400)
POINTS = 150
MAX_OPTIONS = 500
SEARCH_AT = 15  # a filter with more options than this gets a search field
MAX_FIND = 100  # characters of a filter's search text that are used
REFRESH = {"": 0, "30s": 30, "1m": 60, "5m": 300}  # off, and Grafana's choices (grafana.REFRESH_CHOICES)
_PANEL_PARAM = re.compile(r"(sort|page|find)-(\w+)")
_SERIES_ID = re.compile(r"#(\d+)$")  # "ann #7": the id at the end of a per-user series' label
# ClickHouse's DateTime (what $__timeFilter compares with) holds 1970-01-01 to 2106-02-07.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2106, 1, 1, tzinfo=timezone.utc)


class BadRequest(Exception):
    pass


def interval_for(time_from: datetime, time_to: datetime, max_points: int = POINTS) -> int:
    """Seconds per point ($__interval_s): at most min(POINTS, max_points) points in the range."""
    span = (time_to - time_from).total_seconds()
    points = min(POINTS, max_points)
    return next((s for s in INTERVALS if span / s <= points), math.ceil(span / points / 86400) * 86400)


def all_selected(definition: dict) -> dict[str, Variable]:
    return {v["name"]: Variable(ALL) for v in definition["variables"]}


def panel_queries(spec: dict, time_from: datetime, time_to: datetime) -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, SQL as sent to ClickHouse) for every panel, "All" selected:
    what the benchmark times."""
    interval = interval_for(time_from, time_to, spec["embedded"]["dashboards"]["max_points"])
    out = []
    for d in grafana.load_all(spec):
        variables = all_selected(d)
        for p in d["panels"]:
            out.append((d["uid"], p["title"], expand(p["sql"], time_from, time_to, interval, variables)))
    return out


def variable_queries(spec: dict, time_from: datetime, time_to: datetime) -> list[tuple[str, str, str]]:
    """(dashboard uid, variable name, SQL) for every template variable, "All" selected."""
    out = []
    for d in grafana.load_all(spec):
        variables = all_selected(d)
        for v in d["variables"]:
            out.append((d["uid"], v["name"], expand(v["sql"], time_from, time_to, 60, variables)))
    return out


# --- the request: time range and filters, validated

@dataclass
class Selection:
    range_key: str
    time_from: datetime
    time_to: datetime
    values: dict[str, list[str]]  # variable -> selected values ([] = All)
    max_points: int = POINTS

    @property
    def interval(self) -> int:
        return interval_for(self.time_from, self.time_to, self.max_points)


_RELATIVE = re.compile(r"now(?:-(\d{1,6})([mhdw]))?")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, name: str, now: datetime | None = None) -> datetime:
    """An ISO time, or as Grafana's URLs give it: epoch milliseconds or now / now-7d; between
    EARLIEST and LATEST."""
    text = text.strip()
    out_of_range = BadRequest(f"{name}: must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} "
                              f"(ClickHouse's DateTime range), got {text[:40]!r}")
    try:
        if text.isascii() and text.isdigit() and len(text) <= 15:
            t = datetime.fromtimestamp(int(text) / 1000, timezone.utc)
        elif relative := _RELATIVE.fullmatch(text):
            now = now or datetime.now(timezone.utc)
            t = now - timedelta(seconds=int(relative.group(1) or 0) * _UNITS.get(relative.group(2), 0))
        else:
            try:
                t = times.parse_utc(text)
            except ValueError:
                raise BadRequest(f"{name}: expected an ISO time like 2024-01-31T12:00, got {text[:40]!r}") from None
    except (OverflowError, OSError, ValueError):  # beyond what datetime holds (year 1 to 9999)
        raise out_of_range from None
    if not EARLIEST <= t <= LATEST:
        raise out_of_range
    return t


def chosen_values(query: dict[str, list[str]], name: str) -> list[str]:
    """A variable's values from the query string: `users=7` or, as in Grafana's links,
    `var-users=7`; "All" in either spelling selects everything."""
    values = query.get(name, []) + query.get(f"var-{name}", [])
    return [x for x in values if x not in ("", "all", "All", ALL)]


def parse_selection(query: dict[str, list[str]], definition: dict, spec: dict,
                    now: datetime | None = None) -> Selection:
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    range_key = (query.get("range") or [DEFAULT_RANGE])[0]
    custom_from, custom_to = (query.get("from") or [""])[0], (query.get("to") or [""])[0]
    if custom_from:
        time_from = parse_time(custom_from, "from", now)
        time_to = parse_time(custom_to, "to", now) if custom_to else now
        range_key = "custom"
        if time_to <= time_from:
            raise BadRequest("to must be after from")
    elif range_key in RANGES:
        time_from, time_to = now - RANGES[range_key], now
    else:
        raise BadRequest(f"range: expected one of {', '.join(RANGES)}")
    scopes = set(spec["events"]["scopes"]["server"]) | set(spec["events"]["scopes"]["client"])
    bounds = spec["embedded"]["dashboards"]
    values: dict[str, list[str]] = {}
    for v in definition["variables"]:
        chosen = chosen_values(query, v["name"])
        if len(chosen) > bounds["max_selected_values"]:
            raise BadRequest(f"{v['name']}: {len(chosen):,} values selected; at most {bounds['max_selected_values']:,} "
                             "(embedded.dashboards.max_selected_values)")
        for x in chosen:
            # At most 20 digits: int() of a longer string is slow, and past 4,300 digits an error.
            if v["kind"] == "id" and not (x.isascii() and x.isdigit() and len(x) <= 20 and int(x) < 2 ** 64):
                raise BadRequest(f"{v['name']}: expected a whole number id, got {x[:40]!r}")
            if v["kind"] == "scope" and x not in scopes:
                raise BadRequest(f"{v['name']}: not a known scope: {x[:40]!r}")
            if v["kind"] == "source" and x not in ("client", "server"):
                raise BadRequest(f"{v['name']}: expected client or server, got {x[:40]!r}")
        values[v["name"]] = [str(int(x)) if v["kind"] == "id" else x for x in chosen]
    last_page = math.ceil(bounds["max_rows"] / bounds["page_rows"])  # no table has more pages
    for p in definition["panels"]:
        page = (query.get(f"page-{p['id']}") or [""])[0]
        if page and not (page.isascii() and page.isdigit() and len(page) <= 9 and 1 <= int(page) <= last_page):
            raise BadRequest(f"page-{p['id']}: expected a page number from 1 to {last_page} "
                             "(embedded.dashboards.max_rows / page_rows)")
    return Selection(range_key, time_from, time_to, values, spec["embedded"]["dashboards"]["max_points"])


def variables_for(selection: Selection, options: dict[str, list[str]], kinds: dict[str, str]) -> dict[str, Variable]:
    out = {}
    for name, chosen in selection.values.items():
        if not chosen:
            out[name] = Variable(ALL)
        else:
            if kinds[name] == "text":  # free text: only what the variable itself offers
                unknown = [c for c in chosen if c not in options.get(name, [])]
                if unknown:
                    raise BadRequest(f"{name}: not one of its values in this time range: {unknown[0][:60]!r}")
            # Grafana's format puts the single quotes around each value.
            out[name] = Variable([escape_string(c) for c in chosen])
    return out


class PageLinks:
    """URLs of this page with some parameters changed: what a cell, a column header, a legend
    entry or a pager links to (the pages have no script: every interaction is a GET)."""

    def __init__(self, uid: str, query: dict[str, list[str]], definition: dict):
        self.uid = uid
        pairs = [(key, query[key][0]) for key in ("range", "from", "to", "refresh") if (query.get(key) or [""])[0]]
        for v in definition["variables"]:
            pairs += [(v["name"], value) for value in chosen_values(query, v["name"])]
        # This dashboard's own sort-/page-<panel> and find-<variable> only; a search text is
        # cut where the page cuts it: nothing else of the URL is repeated in every link.
        own = {f"{kind}-{p['id']}" for p in definition["panels"] if p["type"] == "table" for kind in ("sort", "page")}
        own |= {f"find-{v['name']}" for v in definition["variables"]}
        pairs += [(key, values[0][:MAX_FIND] if key.startswith("find-") else values[0])
                  for key, values in sorted(query.items()) if key in own and values and values[0]]
        self.pairs = pairs

    def url(self, changes: dict[str, str | None]) -> str:
        """`changes`: parameter -> new value, or None to drop it. A new filter starts every
        table on its first page."""
        filtering = any(not _PANEL_PARAM.fullmatch(k) for k in changes)
        pairs = [(k, v) for k, v in self.pairs
                 if k not in changes and not (filtering and k.startswith("page-"))]
        pairs += [(k, v) for k, v in changes.items() if v is not None]
        return f"/dashboards/{self.uid}" + (f"?{urlencode(pairs)}" if pairs else "")

    def param(self, key: str) -> str:
        return next((v for k, v in self.pairs if k == key), "")


# --- running and drawing

def memory_cap(spec: dict) -> int:
    """Bytes one panel's query may use in serve's engine: the lower of the server's cap
    (clickhouse.dashboards_max_memory_usage_bytes) and serve's (embedded.dashboards.max_memory_mb)."""
    return min(spec["clickhouse"]["dashboards_max_memory_usage_bytes"],
               spec["embedded"]["dashboards"]["max_memory_mb"] * 1048576)


def memory_message(exc: Exception, spec: dict) -> str | None:
    """The engine's MEMORY_LIMIT_EXCEEDED as the spec key that set the limit, else None."""
    bound = store.memory_exceeded(exc)
    if bound is None:
        return None
    if bound == "total":
        return store.ENGINE_MEMORY_MESSAGE
    return (f"this panel's query needed more than {memory_cap(spec) // 1048576} MiB "
            "(embedded.dashboards.max_memory_mb): choose a shorter range or narrower filters")


class Dashboards:
    """The pages; `client_factory()` gives a clickhouse-connect client of its own."""

    def __init__(self, client_factory: Callable[[], object], spec: dict):
        self.spec = spec
        self.definitions = {d["uid"]: d for d in grafana.load_all(spec)}
        self._factory = client_factory
        self._client = None
        self._lock = threading.Lock()  # one chdb handle runs one query at a time
        self._filtered: frozenset[str] | None = None  # what forced filters cover (gate)
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                                      autoescape=True, undefined=jinja2.StrictUndefined,
                                      bytecode_cache=compiled_templates("pages"))
        self.env.filters["cell"] = _cell

    def query(self, sql: str, forced: dict | None = None, limit: int = 0) -> tuple[list[str], list[tuple]]:
        ch = self.spec["clickhouse"]
        settings = {"max_execution_time": ch["dashboards_max_execution_time_s"],
                    "max_memory_usage": memory_cap(self.spec)}
        if limit:
            settings["limit"] = limit  # caps the outer query's rows, as a LIMIT clause would
        if forced:
            settings["additional_table_filters"] = self.forced_filters(forced)
        # Last, so the settings above are applied first and nothing changes them after.
        # readonly=1, not 2: chdb serves a file path as a table of its `default` database
        # (SELECT * FROM `/etc/passwd`), which only readonly=1 refuses.
        settings["readonly"] = 1
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            result = self._client.query(sql, settings=settings)
        return list(result.column_names), [tuple(r) for r in result.result_rows]

    def _ask(self, text: str, params: dict) -> str:
        """The gate's question to the parser (formatQuery, EXPLAIN AST): nothing of the query runs."""
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client.raw_query(text, parameters=params or None, fmt="TabSeparatedRaw").decode()

    def gate(self, sql: str, forced: dict | None = None) -> None:
        """The SQL gate, asked on this service's engine: a definition's SQL is not ours. For a
        caller with forced filters, also the tables it reads: only those the filters cover."""
        try:
            check_statement(self._ask, sql)
        except Refused:
            raise
        except Exception as exc:  # the engine's own error (a syntax error): as the query would give it
            raise Refused(62, str(exc).strip().splitlines()[0][:300], "SYNTAX_ERROR") from None
        if forced:
            if self._filtered is None:  # the same tables whatever the ids: the template's keys
                self._filtered = filtered_tables(self.forced_filters({k: 0 for k in forced}))
            who = "a caller with " + ", ".join(f"{k}={v}" for k, v in sorted(forced.items()))
            check_reads(self._ask, sql, self._filtered, who)

    def forced_filters(self, forced: dict) -> str:
        """A caller limited to an org or a user (service/access.py) sees only those rows."""
        return render_template(self.spec, "clickhouse/runtime/forced_filters.sql.j2",
                               forced={key: int(value) for key, value in forced.items()}).strip()

    def index_page(self) -> str:
        return self.env.get_template("index.html.j2").render(
            dashboards=list(self.definitions.values()), title="Dashboards")

    def dashboard_page(self, uid: str, query: dict[str, list[str]], now: datetime | None = None,
                       forced: dict | None = None) -> str:
        d = self.definitions.get(uid)
        if d is None:
            raise KeyError(uid)
        sel = parse_selection(query, d, self.spec, now)
        refresh = (query.get("refresh") or [""])[0]
        if refresh not in REFRESH:
            raise BadRequest(f"refresh: expected one of off, {', '.join(k for k in REFRESH if k)}")
        links = PageLinks(uid, query, d)
        kinds = {v["name"]: v["kind"] for v in d["variables"]}
        # Variables first, in order (a later one may cascade on an earlier one: tasks on projects).
        options: dict[str, list[str]] = {}
        state: dict[str, Variable] = {name: Variable(ALL) for name in kinds}
        controls = []
        for v in d["variables"]:
            sql = expand(v["sql"], sel.time_from, sel.time_to, sel.interval, state)
            self.gate(sql, forced)
            _, rows = self.query(sql, forced, limit=MAX_OPTIONS)
            options[v["name"]] = [str(r[0]) for r in rows if r[0] is not None]
            state.update(variables_for(Selection(sel.range_key, sel.time_from, sel.time_to,
                                                 {v["name"]: sel.values[v["name"]]}, sel.max_points),
                                       options, kinds))
            shown, find = options[v["name"]], links.param(f"find-{v['name']}")
            if find:  # the search field: the options holding the text, and what is selected
                shown = [o for o in shown if find.casefold() in o.casefold() or o in sel.values[v["name"]]]
            controls.append({"name": v["name"], "label": v["label"], "options": shown,
                             "selected": sel.values[v["name"]], "find": find,
                             "search": len(options[v["name"]]) > SEARCH_AT or bool(find)})
        filterable = {column: variable for column, variable in COLUMN_VARIABLES.items() if variable in kinds}
        panels = [self._panel(p, sel, state, forced, links, filterable) for p in d["panels"]]
        return self.env.get_template("dashboard.html.j2").render(
            title=d["title"], dashboard=d, dashboards=list(self.definitions.values()), panels=panels,
            controls=controls, selection=sel, ranges=list(RANGES), links=links, filterable=filterable,
            refresh=refresh, refresh_s=REFRESH[refresh], refresh_choices=list(REFRESH),
            range_text=f"{sel.time_from:%Y-%m-%d %H:%M} – {sel.time_to:%Y-%m-%d %H:%M} UTC",
            interval_text=_duration_text(sel.interval))

    def _panel(self, p: dict, sel: Selection, state: dict[str, Variable], forced: dict | None = None,
               links: PageLinks | None = None, filterable: dict[str, str] | None = None) -> dict:
        out = {"id": p["id"], "title": p["title"], "type": p["type"], "description": p.get("description", ""),
               "grid": p["gridPos"], "error": None, "empty": False}
        sql = expand(p["sql"], sel.time_from, sel.time_to, sel.interval, state)
        bounds = self.spec["embedded"]["dashboards"]
        max_rows = bounds["max_rows"]
        sort = links.param(f"sort-{p['id']}") if links and p["type"] == "table" else ""
        try:
            self.gate(sql, forced)  # before the sort and column wrappers (ours) go around it
            if sort:
                # The whitelist: the panel's own columns, as ClickHouse names them (no execution).
                described = render_template(self.spec, "clickhouse/runtime/panel_columns.sql.j2", sql=sql)
                known = [r[0] for r in self.query(described, forced)[1]]
                if sort.lstrip("-") not in known:
                    raise BadRequest(f"sort-{p['id']}: not a column of {p['title']}: {sort[:40]!r}")
                sql = render_template(self.spec, "clickhouse/runtime/sorted_panel.sql.j2", sql=sql,
                                      column=sort.lstrip("-"), descending=sort.startswith("-"))
            columns, rows = self.query(sql, forced, limit=max_rows + 1)
        except BadRequest:
            raise
        except Exception as exc:  # one failing panel must not take the page down
            out["error"] = memory_message(exc, self.spec) or str(exc).splitlines()[0][:300]
            return out
        if len(rows) > max_rows:
            if p["type"] != "table":  # a chart of the first rows would be a wrong chart
                out["error"] = (f"more than {max_rows:,} rows (embedded.dashboards.max_rows): "
                                "choose a shorter range or narrower filters")
                return out
            rows = rows[:max_rows]
            out["truncated"] = max_rows
        out["columns"], out["rows"] = columns, rows
        if not rows and p["type"] != "stat":  # an empty result has no columns to draw
            out["empty"] = True
            if p["type"] != "table":
                out["svg"], out["legend"] = "", []
            return out
        series_variable = p.get("series_filter")

        def link(label: str) -> str | None:  # "ann #7" -> this page filtered to user 7
            found = _SERIES_ID.search(label)
            return links.url({series_variable: found.group(1)}) if found and links and series_variable in state else None

        width = p["gridPos"]["w"] * 50
        height = max(p["gridPos"]["h"] * 34 - 80, 80)
        if p["type"] == "timeseries" and len(charts.series_of(columns, rows)) > 6:
            out["svg"], out["legend"] = charts.heatmap_svg(columns, rows, sel.time_from, sel.time_to, sel.interval,
                                                           width=width, height=height, link=link)
            out["empty"] = not rows
            out["heatmap"] = True
        elif p["type"] == "timeseries":
            out["svg"], out["legend"] = charts.timeseries_svg(columns, rows, sel.time_from, sel.time_to,
                                                              bars=p.get("style") == "bars", width=width, height=height,
                                                              link=link)
            out["empty"] = not any(charts._num(v) for r in rows for v in r[1:])
        elif p["type"] in ("barchart", "bargauge", "piechart"):
            out["svg"], out["legend"] = charts.barchart_svg(columns, rows, width=width, height=height + 30, link=link)
            out["empty"] = not rows
        elif p["type"] == "stat":
            row = rows[0] if rows else (None,) * len(columns)
            # A stat in full (60,000 not 60k); further columns (previous period, change) named below it.
            out["value"] = _total([row[0]]) if row[0] is not None else "–"
            out["more"] = [(c, _total([v]) if v is not None else "–") for c, v in zip(columns[1:], row[1:])]
        else:
            totals = p.get("totals") or []
            out["totals"] = [_total([r[i] for r in rows]) if c in totals else None
                             for i, c in enumerate(columns)] if totals else None
            out["empty"] = not rows
            # One page of rows is drawn; the totals are of them all.
            size = bounds["page_rows"]
            pages = max(math.ceil(len(rows) / size), 1)
            page_text = links.param(f"page-{p['id']}") if links else ""
            page = min(int(page_text), pages) if page_text.isascii() and page_text.isdigit() and int(page_text) > 0 else 1
            out["rows"] = rows[(page - 1) * size:page * size]
            out["paging"] = {"page": page, "pages": pages, "first": (page - 1) * size + 1,
                             "last": (page - 1) * size + len(out["rows"]), "count": len(rows)}
            out["sort"] = sort
            out["links"] = {i: filterable[c] for i, c in enumerate(columns) if c in (filterable or {})}
        return out


def _total(values: list) -> str:
    total = sum(v for v in values if isinstance(v, (int, float)))
    return f"{total:,.2f}" if isinstance(total, float) else f"{total:,}"


def _duration_text(seconds: int) -> str:
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''}"
    return f"{seconds} s"


def _cell(value, column: str = "") -> dict:
    """How a table cell shows: text, whether it is long (folded), numeric (right-aligned) or empty."""
    if value is None:
        return {"text": "", "kind": "null"}
    if isinstance(value, datetime):
        return {"text": value.strftime("%Y-%m-%d %H:%M:%S"), "kind": "time"}
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        text = str(value)
        if len(text) > 80 or "\n" in text:
            return {"text": text, "kind": "long", "short": text.splitlines()[0][:70] + "…"}
        return {"text": text, "kind": "text"}
    if column == "id" or column.endswith("_id"):
        return {"text": str(value), "kind": "num"}  # ids without thousands separators
    return {"text": f"{value:,.2f}" if isinstance(value, float) else f"{value:,}", "kind": "num"}


def handle(pages: Dashboards, path: str, query: dict[str, list[str]],
           forced: dict | None = None) -> tuple[int, str]:
    """(status, HTML) for GET /dashboards and /dashboards/<uid>."""
    uid = path[len("/dashboards"):].strip("/")
    if not uid:
        return 200, pages.index_page()
    if uid not in pages.definitions:
        return 404, _message(pages, "No such dashboard", f"There is no dashboard {uid!r}.")
    try:
        return 200, pages.dashboard_page(uid, query, forced=forced)
    except BadRequest as exc:
        return 400, _message(pages, "Bad filter", str(exc))
    except Refused as exc:  # a variable's SQL: its definition must change, or the caller may not read it
        if exc.code == ACCESS_DENIED:
            return 403, _message(pages, "Dashboard refused", f"A filter's SQL is refused: {exc}")
        return 500, _message(pages, "Dashboard refused", f"A filter's SQL is refused: {exc}")


def _message(pages: Dashboards, title: str, text: str) -> str:
    return pages.env.from_string(
        '{% extends "base.html.j2" %}{% block main %}<h1>{{ title }}</h1><p class="sub">{{ text }}</p>'
        '<p><a href="/dashboards">All dashboards</a></p>{% endblock %}'
    ).render(title=title, text=text, dashboards=list(pages.definitions.values()))
