"""A dashboard edited in Grafana and saved as JSON, turned into a definition of our format
(generator/dashboards/*.yaml plus `uid`), for custom_dashboards_dir: `cvat-analytics
dashboards import FILE.json`. Panels (id, title, description, type, grid position, SQL),
query variables and their SQL, bars, table totals and decimals are kept; everything else is
named, one line each, so the user knows what the next `render` will not bring back. The SQL
is data: each query is written `verbatim: true`, taken as written, never filled in or run as a
template.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from .grafana import PANEL_TYPES, _NAME, _UID

ID_VARIABLES = {"users", "projects", "tasks", "jobs", "organizations"}


class DashboardImportError(ValueError):
    """A file that is not a Grafana dashboard we can read; says why."""


def definition_from_json(text: str, source: str = "<json>") -> tuple[dict, list[str]]:
    """(definition, what was not kept) for a Grafana dashboard's JSON model (or the
    {"dashboard": ...} export wrapper)."""
    try:
        model = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DashboardImportError(f"{source}: not JSON: {exc}") from None
    if isinstance(model, dict) and isinstance(model.get("dashboard"), dict):
        model = model["dashboard"]
    if not isinstance(model, dict) or not isinstance(model.get("panels"), list):
        raise DashboardImportError(f"{source}: not a Grafana dashboard (no panels list)")
    lost: list[str] = []
    uid = str(model.get("uid") or "")
    if not _UID.fullmatch(uid):
        raise DashboardImportError(f"{source}: uid {uid!r}: expected 1-40 letters, digits, - or _")
    out: dict = {"uid": uid, "title": str(model.get("title") or uid),
                 "description": str(model.get("description") or "")}

    variables = []
    for v in (model.get("templating") or {}).get("list") or []:
        name = str(v.get("name") or "")
        query = v.get("query")
        sql = query.get("rawSql") if isinstance(query, dict) else query
        if v.get("type") == "adhoc" or name == "clickhouse_adhoc_query":
            continue  # render adds them to every dashboard that reads events
        if v.get("type") != "query" or not isinstance(sql, str) or not sql.strip():
            lost.append(f"variable {name}: a {v.get('type')} variable is not kept (only query variables are)")
            continue
        if not _NAME.fullmatch(name):
            lost.append(f"variable {name!r}: not a name of letters, digits and _, not kept")
            continue
        variables.append({"name": name, "label": str(v.get("label") or name), "kind": _kind(name),
                          "verbatim": True, "sql": sql.strip()})
    out["variables"] = variables

    panels = []
    for p in _flatten(model["panels"], lost):
        where = f"panel {p.get('id')} ({p.get('title')})"
        if p.get("type") not in PANEL_TYPES:
            lost.append(f"{where}: type {p.get('type')} is not one of {', '.join(PANEL_TYPES)}, not kept")
            continue
        targets = [t for t in p.get("targets") or [] if isinstance(t.get("rawSql"), str) and t["rawSql"].strip()]
        if not targets:
            lost.append(f"{where}: no SQL query, not kept")
            continue
        if len(targets) > 1:
            lost.append(f"{where}: {len(targets)} queries, only the first ({targets[0].get('refId')}) kept")
        grid = p.get("gridPos") or {}
        panel = {"id": int(p["id"]), "title": str(p.get("title") or ""), "type": p["type"]}
        if p.get("description"):
            panel["description"] = str(p["description"])
        defaults = (p.get("fieldConfig") or {}).get("defaults") or {}
        if p["type"] == "timeseries" and (defaults.get("custom") or {}).get("drawStyle") == "bars":
            panel["style"] = "bars"
        footer = (p.get("options") or {}).get("footer") or {}
        if p["type"] == "table" and footer.get("show") and footer.get("fields"):
            panel["totals"] = list(footer["fields"])
        decimals = {}
        for o in (p.get("fieldConfig") or {}).get("overrides") or []:
            for prop in o.get("properties") or []:
                if prop.get("id") == "decimals" and (o.get("matcher") or {}).get("id") == "byName":
                    decimals[o["matcher"]["options"]] = prop["value"]
                elif prop.get("id") == "links":
                    continue  # made again from the column names by render
                else:
                    lost.append(f"{where}: field override {prop.get('id')} of {(o.get('matcher') or {}).get('options')} not kept")
        if decimals:
            panel["decimals"] = decimals
        panel["gridPos"] = {k: int(grid.get(k, 0)) for k in ("x", "y", "w", "h")}
        panel["verbatim"] = True
        panel["sql"] = targets[0]["rawSql"].strip()
        panels.append(panel)
    if not panels:
        raise DashboardImportError(f"{source}: no panel with a SQL query of a kind we draw")
    out["panels"] = panels
    if (model.get("annotations") or {}).get("list"):
        lost.append(f"annotations: {len(model['annotations']['list'])} not kept")
    time = model.get("time") or {}
    if time and (time.get("from"), time.get("to")) != ("now-7d", "now"):
        lost.append(f"time range {time.get('from')} to {time.get('to')}: not kept (dashboards open on the last 7 days)")
    lost.append("colours, units, thresholds, legends and other display options: not kept (the format has none)")
    return out, lost


def _kind(name: str) -> str:
    if name in ID_VARIABLES or name.endswith("_id") or name.endswith("_ids"):
        return "id"
    return {"scopes": "scope", "sources": "source"}.get(name, "text")


def _flatten(panels: list, lost: list[str]):
    for p in panels:
        if p.get("type") == "row":
            lost.append(f"row {p.get('title')!r}: rows are not kept, its panels are")
            yield from _flatten(p.get("panels") or [], lost)
        else:
            yield p


def write_definition(definition: dict, folder: Path, name: str) -> Path:
    """Write folder/name.yaml whole: written beside it, then renamed over it, so a link of that
    name is replaced, never followed to the file it points at."""
    path = Path(folder) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.unlink(missing_ok=True)
    with open(staging, "x", encoding="utf-8") as f:  # "x": never through a link left there
        f.write("# Imported from Grafana by `cvat-analytics dashboards import`; edit freely.\n"
                + yaml.dump(definition, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=120))
    os.replace(staging, path)
    return path


def name_for(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")[:60] or "dashboard"


class _BlockDumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:
        return True  # a value written twice is written out twice: definitions take no alias


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value and not re.search(r"[ \t]\n|\n[ \t]*\n$", value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)
