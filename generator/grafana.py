"""Dashboard definitions (generator/dashboards/*.yaml) and their Grafana JSON.

One definition per dashboard: uid, title, template variables with their SQL, the
filters every panel applies, and the panels (id, title, type, gridPos, SQL). The
Grafana JSON is built from it here; the embedded service draws the same panels from
the same SQL (cvat_analytics/dashboards.py). SQL keeps the plugin's macros and
${variables}; only {{ db }}, {{ filters }} (and any other `*_filters` list) and the
definition's `fragments` are filled in (load). The built-in
definitions are the project's Jinja templates; a user's own are never a template (fill).
"""
from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from . import user_file
from .sql import ident, string_literal

DEFINITIONS = Path(__file__).with_name("dashboards")
PANEL_TYPES = ("timeseries", "barchart", "table", "stat", "piechart", "bargauge")
PLUGIN = "grafana-clickhouse-datasource"
OTHER_CATEGORY = "Other / uncategorized"  # an exception no category of the spec matches (CVAT's draft's name)


def _builtin_definition(name: str) -> dict:
    """A built-in definition file as parsed, a copy of what this process parsed while the file
    is unchanged: parsing was a quarter of a load once its SQL stopped being compiled each time."""
    path = DEFINITIONS / f"{name}.yaml"
    stat = path.stat()
    return copy.deepcopy(_parsed(path, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=32)
def _parsed(path: Path, mtime_ns: int, size: int) -> object:
    return _read(path)


@functools.lru_cache(maxsize=1024)
def _builtin_template(text: str) -> jinja2.Template:
    """A built-in definition's SQL, compiled once per process: compiling was three quarters of
    a load (80 panels, 0.1 s), and a process loads the same definitions again and again."""
    return _sandbox().from_string(text)


@functools.cache
def _sandbox() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters["sql_str"] = string_literal  # spec values (exception patterns) as string literals
    return env


def load(name: str, spec: dict, path: Path | None = None, from_events: bool = False) -> dict:
    """The definition of dashboard `name` with its SQL completed for this spec: a built-in's
    uid is the spec's, a custom one's (`path`, from custom_dashboards_dir) its own;
    `filters` and every `*_filters` list become one ANDed condition each; `fragments` are
    filled in order, each able to use the ones before it. A built-in's SQL is a Jinja template
    (rendered in a sandbox); a custom one's only has its {{ names }} replaced (fill), and SQL
    marked `verbatim` (what `dashboards import` writes) is taken as written. `from_events`:
    the shared queries read the events instead of the state the engine keeps (the reference
    `make bench` times them against)."""
    max_points = spec["embedded"]["dashboards"]["max_points"]
    ctx = {"db": db_name(spec), "other": OTHER_CATEGORY}
    if path is None:
        data = _builtin_definition(name)
        builtin = {"exceptions": spec["exceptions"], "bucket_s": lambda floor: bucket_s(floor, max_points),
                   "duration_cap_s": spec["working_time"]["duration_cap_s"],
                   "query": lambda template, **shape: shared_query(spec, ctx, template, from_events=from_events,
                                                                   **shape)}

        def complete(text: str) -> str:
            return _builtin_template(text).render({**builtin, **ctx})
    else:
        data = read_custom(path)
        filled = 0

        def complete(text: str) -> str:
            # Bounded per definition, not only per text: panels that each fill in a large
            # fragment would otherwise multiply it (400 panels x 1 MiB).
            nonlocal filled
            out = fill(text, ctx, max_points)
            filled += len(out)
            if filled > MAX_FILLED_BYTES:
                raise FillError(f"filled in, the definition's SQL is larger than {MAX_FILLED_BYTES} bytes")
            return out

    def completed(text: str, where: str) -> str:
        try:
            return complete(text).strip()
        except (jinja2.TemplateError, FillError) as exc:
            raise DefinitionError(f"{path or name}: {where}: {exc}") from None

    for key, value in data.items():
        if key == "filters" or key.endswith("_filters"):
            ctx[key] = completed(" AND ".join(value or ["1=1"]), key)
    for key, text in (data.get("fragments") or {}).items():
        ctx[key] = completed(text, f"fragments.{key}")
    data["name"] = name
    data["uid"] = spec["dashboards"][name] if path is None else data["uid"]
    data.setdefault("variables", [])
    for item in data["variables"] + data["panels"]:
        where = f"{item.get('name') or item.get('title')}: sql"
        item["sql"] = item["sql"].strip() if item.get("verbatim") else completed(item["sql"], where)
        if "\x00" in item["sql"]:  # NUL marks a variable's value while macros expand (grafana_macros)
            raise DefinitionError(f"{path or name}: {where}: the SQL holds a NUL character")
    return data


# The statements of clickhouse/queries/ a built-in panel may be (docs/productivity.md): the
# panel and the CLI run the same SQL, filtered by the dashboard's variables instead of
# bound parameters.
SHARED_QUERIES = ("productivity_objects", "productivity_speed", "productivity_reviews", "productivity_timesheet",
                  "productivity_user_names")


def shared_query(spec: dict, ctx: dict, template: str, from_events: bool = False, **shape) -> str:
    """{{ query("productivity_speed", level="job") }} in a built-in definition: that
    statement rendered with the definition's `filters` and `job_filters` and Grafana's range."""
    from .render import render_template

    if template not in SHARED_QUERIES:
        raise jinja2.TemplateError(f"query({template!r}): one of {', '.join(SHARED_QUERIES)}")
    dashboard = {"filters": ctx["filters"], "job_filters": ctx.get("job_filters", ctx["filters"])}
    sql = render_template(spec, f"clickhouse/queries/{template}.sql.j2", db=ctx["db"], dashboard=dashboard,
                          from_events=from_events, **shape)
    # Without its comment lines: the Grafana plugin's ad hoc filters read a ';' in one as the
    # statement's end (tests/test_grafana_adhoc.py).
    return "\n".join(line for line in sql.strip().splitlines() if not line.lstrip().startswith("--"))


# All the SQL of one custom definition, filled in.
MAX_FILLED_BYTES = 4 * user_file.MAX_BYTES


class FillError(ValueError):
    """A custom definition's SQL that cannot be filled in; says what."""


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*(?:\(\s*(\d{1,9})\s*\))?\s*\}\}")


def fill(text: str, names: dict[str, str], max_points: int) -> str:
    """A custom definition's SQL with each {{ name }} of `names` and {{ bucket_s(seconds) }}
    replaced: text substitution, never a template, so nothing in the file runs. Any other
    {{, {% or {# is refused, and so is a result past user_file.MAX_BYTES (fragments that
    use each other twice over would otherwise double at each step)."""
    if leftover := re.search(r"\{[{%#].{0,40}", _PLACEHOLDER.sub("", text)):
        raise FillError(f"{leftover.group(0)!r}: only {{{{ name }}}} is filled in (db, other, filters, "
                        f"*_filters, the fragments, bucket_s(seconds)); SQL meant as written takes `verbatim: true`")
    size = len(text)

    def one(match: re.Match) -> str:
        nonlocal size
        name, seconds = match.groups()
        if seconds is not None and name == "bucket_s":
            value = bucket_s(int(seconds), max_points)
        elif seconds is None and name in names:
            value = names[name]
        else:
            raise FillError(f"{match.group(0)}: not a name this definition has (db, other, filters, *_filters, "
                            f"the fragments before it, bucket_s(seconds))")
        size += len(value)
        if size > user_file.MAX_BYTES:
            raise FillError(f"filled in, the SQL is larger than {user_file.MAX_BYTES} bytes")
        return value

    return _PLACEHOLDER.sub(one, text)


def bucket_s(floor: int, max_points: int) -> str:
    """SQL for a time bucket of `floor` seconds, or a whole multiple of it when the range
    would otherwise have more than `max_points` buckets (a panel that counts per 15 minutes
    draws 1000 points over 30 years, not a million). Grafana and the service give
    $__from/$__to, so both draw the same buckets."""
    per_bucket_ms = floor * max_points * 1000
    return f"{floor} * greatest(1, intDiv($__to - $__from + {per_bucket_ms - 1}, {per_bucket_ms}))"


def load_all(spec: dict) -> list[dict]:
    """The built-in dashboards the spec lists, in its order, then the user's own from
    custom_dashboards_dir by file name. A custom one with a built-in's name or uid takes its
    place (a dashboard edited in Grafana and imported replaces the one it was made from)."""
    customs = [load(path.stem, spec, path) for path in custom_files(spec)]
    out = []
    for name in spec["dashboards"]:
        same = [c for c in customs if c["name"] == name or c["uid"] == spec["dashboards"][name]]
        out.append(same[0] if same else load(name, spec))
    out += [c for c in customs if c not in out]
    seen: dict[str, str] = {}
    for d in out:
        if d["uid"] in seen:
            raise DefinitionError(f"{d.get('path') or d['name']}: uid {d['uid']!r} is also {seen[d['uid']]}'s")
        seen[d["uid"]] = d["name"]
    return out


# --- the user's own definitions ---------------------------------------------------------------

class DefinitionError(ValueError):
    """A custom dashboard definition that cannot be drawn; says file and key."""


KINDS = ("id", "text", "scope", "source")
# Columns whose cells filter the dashboard to their value, when it has that variable (CVAT's names).
COLUMN_VARIABLES = {"user_id": "users", "user_name": "usernames", "project_id": "projects", "task_id": "tasks",
                    "job_id": "jobs", "org_id": "organizations", "scope": "scopes", "source": "sources",
                    "error": "errors", "category": "category"}
REFRESH_CHOICES = ("30s", "1m", "5m")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_UID = re.compile(r"[A-Za-z0-9_-]{1,40}")


def custom_files(spec: dict) -> list[Path]:
    folder = spec.get("custom_dashboards_dir") or ""
    if not folder:
        return []
    folder = Path(folder)
    if not folder.is_dir():
        raise DefinitionError(f"custom_dashboards_dir: {folder} is not a directory")
    return sorted(folder.glob("*.yaml"))


def _read(path: Path, folder: Path | None = None) -> object:
    try:
        return user_file.read_yaml(path, folder)[0]
    except user_file.UserFileError as exc:
        raise DefinitionError(str(exc)) from None


def read_custom(path: Path) -> dict:
    """A custom definition, checked: the same format as generator/dashboards/*.yaml, plus `uid`;
    the file must lie in its folder (a link leading elsewhere is refused)."""
    data = _read(path, path.parent)

    def need(ok: bool, where: str, expected: str) -> None:
        if not ok:
            raise DefinitionError(f"{path}: {where}: expected {expected}")

    need(isinstance(data, dict), "the file", "a mapping with uid, title, variables, panels")
    need(isinstance(data.get("uid"), str) and bool(_UID.fullmatch(data["uid"])), "uid",
         "1-40 letters, digits, - or _")
    need(isinstance(data.get("title"), str) and bool(data["title"].strip()), "title", "a text")
    data.setdefault("description", "")
    need(isinstance(data["description"], str), "description", "a text")
    need(isinstance(data.get("variables", []), list), "variables", "a list")
    for i, v in enumerate(data.get("variables") or []):
        where = f"variables.{i}"
        need(isinstance(v, dict), where, "a mapping with name, label, kind, sql")
        need(isinstance(v.get("name"), str) and bool(_NAME.fullmatch(v["name"])), f"{where}.name", "a name of letters, digits and _")
        v.setdefault("label", v["name"])
        need(v.get("kind") in KINDS, f"{where}.kind", "one of " + ", ".join(KINDS))
        need(isinstance(v.get("sql"), str), f"{where}.sql", "SQL text")
        need(isinstance(v.get("verbatim", False), bool), f"{where}.verbatim", "true or false")
    need(isinstance(data.get("panels"), list) and bool(data["panels"]), "panels", "a list of panels")
    ids = set()
    for i, p in enumerate(data["panels"]):
        where = f"panels.{i}"
        need(isinstance(p, dict), where, "a mapping with id, title, type, gridPos, sql")
        need(isinstance(p.get("id"), int) and p["id"] not in ids, f"{where}.id", "a whole number unique in the dashboard")
        ids.add(p["id"])
        need(isinstance(p.get("title"), str), f"{where}.title", "a text")
        need(p.get("type") in PANEL_TYPES, f"{where}.type", "one of " + ", ".join(PANEL_TYPES))
        grid = p.get("gridPos")
        need(isinstance(grid, dict) and all(isinstance(grid.get(k), int) and grid[k] >= 0 for k in "xywh")
             and grid["x"] + grid["w"] <= 24, f"{where}.gridPos", "{x, y, w, h}: whole numbers, x + w at most 24")
        need(isinstance(p.get("sql"), str) and bool(p["sql"].strip()), f"{where}.sql", "SQL text")
        need(isinstance(p.get("verbatim", False), bool), f"{where}.verbatim", "true or false")
    for key in data:
        if key == "filters" or key.endswith("_filters"):
            need(isinstance(data[key], list) and all(isinstance(f, str) for f in data[key]), key, "a list of SQL conditions")
    need(isinstance(data.get("fragments") or {}, dict), "fragments", "a mapping of names to SQL")
    data["path"] = str(path)
    return data


def definition_json(d: dict, spec: dict) -> str:
    """Grafana's JSON model of a loaded definition."""
    ds = {"type": PLUGIN, "uid": spec["grafana"]["datasource_uid"]}
    model = {
        "uid": d["uid"],
        "title": d["title"],
        "description": d["description"],
        "tags": ["cvat", "cvat-analytics"],
        "editable": True,  # whether an edit can be saved is the provisioning's allowUiUpdates
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-7d", "to": "now"},
        "timezone": "browser",
        "refresh": "",  # off; the choices below, as the embedded pages offer them
        "timepicker": {"refresh_intervals": list(REFRESH_CHOICES)},
        "links": [{"title": "CVAT dashboards", "type": "dashboards", "tags": ["cvat"], "asDropdown": True}],
        "templating": {"list": [_variable(v, ds) for v in d["variables"]] + _adhoc(d, ds, db_name(spec))},
        "annotations": {"list": []},
        "panels": [_panel(p, ds, spec["grafana"]["clickhouse_plugin_version"], _filter_links(d))
                   for p in d["panels"]],
    }
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


def _variable(v: dict, ds: dict) -> dict:
    return {
        "name": v["name"],
        "label": v["label"],
        "type": "query",
        "datasource": ds,
        "definition": v["sql"],
        "query": v["sql"],
        "refresh": 2,  # re-read when the time range changes
        "multi": True,
        "includeAll": True,
        # Panels use $__conditionalAll, which turns "All" into 1=1 before this is read.
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "sort": 0,  # keep the query's ORDER BY
        "hide": 0,
    }


def db_name(spec: dict) -> str:
    """The database as the dashboards' SQL names it ({{ db }}): in double quotes, which ClickHouse
    reads as it reads backticks and the Grafana plugin's ad hoc filters need (see _adhoc)."""
    return '"' + ident(spec["clickhouse"]["database"])[1:-1] + '"'


# Values the ad hoc filter offers for a key (the distinct ones in the dashboard's time range).
ADHOC_VALUES = 1000


def _adhoc(d: dict, ds: dict, db: str) -> list[dict]:
    """Grafana's ad hoc filters (any column of events = value, from the filter bar), on a dashboard
    whose panels read events. What plugin 4.20.0 does with them (src/data/ at v4.20.0):
    - keys: clickhouse_adhoc_query holds $__adhoc_column, so the plugin takes the table from its
      FROM (CHDatasource.ts fetchTags, lines 1710-1726) and offers the columns system.columns
      lists for it; without that macro it would run the whole query (SELECT * of every event) for
      its column names;
    - values: the same query with the key in place of $__adhoc_column (lines 1676-1689), here the
      distinct values in the dashboard's time range, at most ADHOC_VALUES;
    - the table to filter: the query's FROM read by pgsql-ast-parser (ast.ts getTable, lines
      126-146), which refuses backticks, hence db_name's double quotes;
    - a panel is filtered only if its SQL, double quotes removed, contains that table
      (adHocFilter.ts line 78), then gets ` settings additional_table_filters={...}` (line 97):
      the dashboards profile lets that setting change (users.d), and so does /clickhouse's gate.
    tests/test_grafana_adhoc.py runs this on the plugin's parser."""
    events = f"{db}.events"
    if not re.search(rf"{re.escape(events)}(?!\w)", "\n".join(p["sql"] for p in d["panels"])):
        return []
    query = f"SELECT DISTINCT $__adhoc_column FROM {events} WHERE $__timeFilter(timestamp) LIMIT {ADHOC_VALUES}"
    return [{"name": "clickhouse_adhoc_query", "type": "constant", "hide": 2, "query": query},
            {"name": "adhoc", "label": "Ad hoc filters", "type": "adhoc", "datasource": ds, "filters": [], "hide": 0}]


def _filter_links(d: dict) -> dict[str, dict]:
    """Per column, the data link that opens this dashboard filtered to the cell's value, the
    other filters and the time range kept (as the embedded pages link their cells)."""
    names = [v["name"] for v in d["variables"]]
    links = {}
    for column, variable in COLUMN_VARIABLES.items():
        if variable in names:
            others = "".join(f"&${{{n}:queryparam}}" for n in names if n != variable)
            links[column] = {"title": f"Filter by this {column}", "targetBlank": False,
                             "url": f"/d/{d['uid']}?${{__url_time_range}}{others}&var-{variable}=${{__value.raw}}"}
    return links


def _panel(p: dict, ds: dict, plugin_version: str, links: dict[str, dict] | None = None) -> dict:
    kind = p["type"]
    timeseries = kind == "timeseries"
    target = {
        "refId": "A",
        "datasource": ds,
        # The plugin's version: without it plugin 4.x takes the query for a v3 one and
        # rewrites it on every load (src/data/migration.ts at v4.20.0).
        "pluginVersion": plugin_version,
        "editorType": "sql",
        "format": 0 if timeseries else 1,  # 0: time series (long to wide), 1: table
        "queryType": "timeseries" if timeseries else "table",
        "rawSql": p["sql"],
    }
    custom: dict = {}
    options: dict = {}
    if timeseries:
        bars = p.get("style") == "bars"
        custom = {"drawStyle": "bars" if bars else "line", "fillOpacity": 80 if bars else 12,
                  "lineWidth": 2, "showPoints": "never", "spanNulls": False,
                  "stacking": {"mode": "normal" if bars else "none", "group": "A"}}
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "barchart":
        options = {"orientation": "horizontal", "showValue": "auto", "barWidth": 0.8, "groupWidth": 0.7,
                   "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "none"}, "xTickLabelRotation": 0}
    elif kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "value", "graphMode": "none", "justifyMode": "center",
                   # several values (a figure, the previous period's, the change): each named
                   "textMode": "value_and_name"}
    elif kind == "table":
        totals = p.get("totals") or []
        options = {"showHeader": True, "cellHeight": "sm",
                   "footer": {"show": bool(totals), "reducer": ["sum"], "fields": totals, "countRows": False}}
        custom = {"filterable": True, "inspect": True}  # headers sort on a click; cells inspect whole
    return {
        "id": p["id"],
        "type": kind,
        "title": p["title"],
        "description": p.get("description", ""),
        "gridPos": dict(p["gridPos"]),
        "datasource": ds,
        "targets": [target],
        # Values are sent unrounded (a footer sums what it is given); only the display rounds.
        "fieldConfig": {"defaults": {"custom": custom},
                        "overrides": [{"matcher": {"id": "byName", "options": column},
                                       "properties": [{"id": "decimals", "value": places}]}
                                      for column, places in (p.get("decimals") or {}).items()]
                        + ([{"matcher": {"id": "byName", "options": column}, "properties": [{"id": "links", "value": [link]}]}
                            for column, link in (links or {}).items()] if kind == "table" else [])},
        "options": options,
    }
