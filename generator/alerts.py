"""The alert conditions: what each asks ClickHouse, the threshold it fires above, and
Grafana's alert rules for them.

One SQL statement per condition (templates/clickhouse/queries/alerts.sql.j2), rendered
once per spec: `conditions(spec)` gives each with its threshold from the spec's `alerts`,
Grafana's rule file (`provisioning_yaml`) embeds that text, and serve's /health and
/metrics run it (cvat_analytics/service/alerts.py). A condition fires when its value is
above its threshold, in both.

`alerting_problems(files)` checks a rendered rule file against Grafana's file provisioning
of alerting as its source reads it (grafana/grafana, pkg/services/provisioning/alerting;
the stored revisions read are cited by commit and line below, the same structs as 12.4's):
- types.go@10a47ba6 `AlertingFileV1` (l. 24-33): `apiVersion`, `groups`;
- rules_types.go@0085cf86 `AlertRuleGroupV1` (l. 26-32) and its MapToModel (l. 34-58): a
  group needs `name`, `folder` and an `interval` that model.ParseDuration reads;
  `AlertRuleV1` (l. 60-78) and mapToModel (l. 87-): a rule needs `title`, `uid`, `data`
  and `condition`; `for` is a duration; `noDataState` is one of NoDataStateFromString's
  and `execErrState` one of ErrStateFromString's (pkg/services/ngalert/models/alert_rule.go);
  `QueryV1`: `refId`, `relativeTimeRange`, `datasourceUid`, `model`;
- pkg/expr/commands.go: UnmarshalReduceCommand reads `expression` and `reducer`,
  UnmarshalThresholdCommand `expression` and exactly one of `conditions` whose
  `evaluator` has `type` and `params`; an expression's datasource uid is `__expr__`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .render import context, environment
from .sql import parse
from .yaml_load import safe_load

QUERIES = "clickhouse/queries/alerts.sql.j2"
TEMPLATE = "grafana/provisioning/alerting/cvat.yaml.jinja"  # not .j2: render_all renders it with the conditions
PROVISIONING = "grafana/provisioning/alerting/cvat.yaml"
DATASOURCES = "grafana/provisioning/datasources/"
EXPRESSIONS_UID = "__expr__"
# Grafana's values (models.NoDataStateFromString, models.ErrStateFromString).
NO_DATA_STATES = {"Alerting", "NoData", "OK", "KeepLast"}
ERROR_STATES = {"Alerting", "Error", "OK", "KeepLast"}
# mathexp.GetReduceFunc's reducers; the threshold types of expr.IsSupportedThresholdFunc.
REDUCERS = {"sum", "mean", "min", "max", "count", "last", "median"}
THRESHOLD_TYPES = {"gt", "lt", "within_range", "outside_range", "within_range_included",
                   "outside_range_included", "eq", "ne", "gte", "lte"}
# prometheus/common model.ParseDuration, which Grafana uses for `interval` and `for`.
DURATION = re.compile(r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$")
UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


@dataclass(frozen=True)
class Condition:
    name: str        # the label, the /health and /metrics name, the statement's name
    title: str       # Grafana's rule title
    summary: str     # what firing means, for people
    threshold: float  # fires when value > threshold
    unit: str
    sql: str


def conditions(spec: dict) -> list[Condition]:
    """Every condition with its SQL (rendered once here) and its threshold from the spec."""
    a = spec["alerts"]
    sql = parse(environment().get_template(QUERIES).render(context(spec)), QUERIES)
    rows = [
        ("events_lost", "Events refused or dropped", "events", a["events_lost"]["max_events"],
         f"Vector refused (dead-letter file) or dropped events in the last {a['events_lost']['window_minutes']} "
         "minutes: read the Monitoring dashboard's Vector panel and Vector's log; re-import the dead-letter "
         "file once the cause is fixed"),
        ("vector_silent", "Vector's metrics stopped", "seconds", a["vector_silent"]["quiet_minutes"] * 60,
         f"No metrics from Vector for {a['vector_silent']['quiet_minutes']} minutes: Vector cannot write to "
         "ClickHouse (ClickHouse refuses the ingest password, e.g. changed in .env without recreating Vector; "
         "a table is missing; ClickHouse is down), and it drops every batch refused with 403 or 404: "
         "read Vector's log (docs/reliability-and-security.md)"),
        ("ingest_stalled", "Ingest stalled", "seconds", a["ingest_stalled"]["quiet_minutes"] * 60,
         f"No event has been stored for {a['ingest_stalled']['quiet_minutes']} minutes although events arrived "
         "before: check CVAT's sender, Vector and ClickHouse"),
        ("working_time_stale", "Working time stale", "seconds", a["working_time_stale"]["max_age_minutes"] * 60,
         f"Events stored more than {a['working_time_stale']['max_age_minutes']} minutes ago are not yet in the "
         "working-time totals: the refresh fails or lags (system.view_refreshes.exception)"),
        ("productivity_stale", "Productivity stale", "seconds", a["productivity_stale"]["max_age_minutes"] * 60,
         f"Events stored more than {a['productivity_stale']['max_age_minutes']} minutes ago are not yet in the "
         "productivity state: its refresh fails or lags (system.view_refreshes.exception of productivity_refresh)"),
        ("exception_spike", "Exception spike", "exceptions", a["exception_spike"]["max_exceptions"],
         f"More than {a['exception_spike']['max_exceptions']} exceptions in the last "
         f"{a['exception_spike']['window_minutes']} minutes: see the Exceptions dashboard"),
    ]
    return [Condition(name, title, summary, threshold, unit, sql.named(name))
            for name, title, unit, threshold, summary in rows]


def firing(condition: Condition, value: float) -> bool:
    return value > condition.threshold


def provisioning_yaml(spec: dict) -> str:
    """Grafana's alert rule file for this spec."""
    return environment().get_template(TEMPLATE).render({**context(spec), "conditions": conditions(spec)})


def alert_queries(files: dict[str, str]) -> list[tuple[str, str, str]]:
    """(relpath, "alert rule <uid>", SQL) for every datasource query of the rendered rule files:
    `check` gates, grant-checks and runs them read-only as it does the dashboards' queries."""
    out = []
    for rel in sorted(r for r in files if r.startswith("grafana/provisioning/alerting/") and r.endswith((".yaml", ".yml"))):
        for group in (safe_load(files[rel]) or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                for query in rule.get("data") or []:
                    sql = (query.get("model") or {}).get("rawSql")
                    if sql and query.get("datasourceUid") != EXPRESSIONS_UID:
                        out.append((rel, f"alert rule {rule.get('uid')}", sql))
    return out


# --- the rendered rule file, read as Grafana's provisioning reads it --------------------------

def alerting_problems(files: dict[str, str]) -> list[str]:
    """"relpath: what is wrong" for every alerting file of a rendered tree."""
    uids = set()
    for rel in sorted(r for r in files if r.startswith(DATASOURCES) and r.endswith((".yaml", ".yml"))):
        uids |= {ds.get("uid") for ds in (safe_load(files[rel]) or {}).get("datasources") or []}
    problems = []
    for rel in sorted(r for r in files if r.startswith("grafana/provisioning/alerting/")):
        if not rel.endswith((".yaml", ".yml", ".json")):
            problems.append(f"{rel}: Grafana refuses the whole folder: only .yaml, .yml and .json files")
            continue
        problems += [f"{rel}: {p}" for p in _file_problems(safe_load(files[rel]) or {}, uids)]
    return problems


def _file_problems(doc: dict, datasource_uids: set) -> list[str]:
    if doc.get("apiVersion") != 1:
        return [f"apiVersion must be 1, got {doc.get('apiVersion')!r}"]
    problems, seen_uids = [], set()
    for g, group in enumerate(doc.get("groups") or []):
        where = f"groups[{g}]"
        for key in ("name", "folder"):
            if not str(group.get(key) or "").strip():
                problems.append(f"{where}: no {key} (Grafana: rule group has no {key} set)")
        if not DURATION.fullmatch(str(group.get("interval") or "")) or not group.get("interval"):
            problems.append(f"{where}: interval {group.get('interval')!r} is not a duration like 60s")
        titles = set()
        for r, rule in enumerate(group.get("rules") or []):
            problems += [f"{where}.rules[{r}]: {p}" for p in _rule_problems(rule, datasource_uids)]
            if rule.get("uid") in seen_uids or rule.get("title") in titles:
                problems.append(f"{where}.rules[{r}]: uid or title used twice")
            seen_uids.add(rule.get("uid"))
            titles.add(rule.get("title"))
    return problems


def _rule_problems(rule: dict, datasource_uids: set) -> list[str]:
    problems = []
    if not rule.get("title"):
        problems.append("no title")
    if not UID.fullmatch(str(rule.get("uid") or "")):
        problems.append(f"uid {rule.get('uid')!r} is not 1-40 letters, digits, - or _")
    if not DURATION.fullmatch(str(rule.get("for") or "0")):
        problems.append(f"for {rule.get('for')!r} is not a duration")
    if rule.get("noDataState", "NoData") not in NO_DATA_STATES:
        problems.append(f"noDataState {rule.get('noDataState')!r} is not one of {sorted(NO_DATA_STATES)}")
    if rule.get("execErrState", "Alerting") not in ERROR_STATES:
        problems.append(f"execErrState {rule.get('execErrState')!r} is not one of {sorted(ERROR_STATES)}")
    data = rule.get("data") or []
    if not data:
        problems.append("no data")
    refs: list[str] = []
    for d, query in enumerate(data):
        model, ref = query.get("model") or {}, query.get("refId")
        where = f"data[{d}] ({ref})"
        if not ref or ref in refs:
            problems.append(f"{where}: refId missing or used twice")
        if model.get("refId") != ref:
            problems.append(f"{where}: model.refId {model.get('refId')!r} is not the query's refId")
        source = query.get("datasourceUid")
        if source == EXPRESSIONS_UID:
            problems += [f"{where}: {p}" for p in _expression_problems(model, refs)]
        elif source not in datasource_uids:
            problems.append(f"{where}: datasourceUid {source!r} is no provisioned datasource ({sorted(datasource_uids)})")
        else:
            span = query.get("relativeTimeRange") or {}
            if not isinstance(span.get("from"), int) or not isinstance(span.get("to"), int) or span["from"] <= span["to"]:
                problems.append(f"{where}: relativeTimeRange needs from > to (seconds before now), got {span!r}")
            if (model.get("datasource") or {}).get("uid") != source or not model.get("rawSql"):
                problems.append(f"{where}: model needs rawSql and the datasource {source!r}")
        refs.append(ref)
    if rule.get("condition") not in refs:
        problems.append(f"condition {rule.get('condition')!r} is not one of the refIds {refs}")
    return problems


def _expression_problems(model: dict, earlier: list[str]) -> list[str]:
    kind = model.get("type")
    if (model.get("datasource") or {}).get("uid") != EXPRESSIONS_UID:
        return [f"an expression's model.datasource.uid must be {EXPRESSIONS_UID}"]
    if model.get("expression") not in earlier:
        return [f"{kind} reads {model.get('expression')!r}, not a refId before it ({earlier})"]
    if kind == "reduce":
        return [] if model.get("reducer") in REDUCERS else [f"reducer {model.get('reducer')!r} is not one of {sorted(REDUCERS)}"]
    if kind == "threshold":
        conditions_ = model.get("conditions") or []
        evaluator = (conditions_[0].get("evaluator") or {}) if len(conditions_) == 1 else {}
        params = evaluator.get("params")
        if evaluator.get("type") not in THRESHOLD_TYPES or not isinstance(params, list) or not params \
                or not all(isinstance(p, (int, float)) for p in params):
            return ["a threshold needs exactly one condition whose evaluator has a type and numeric params"]
        return []
    return [f"expression type {kind!r}: only reduce and threshold are rendered here"]
