"""Load and validate analytics.yaml: one clear message per mistake, never a traceback."""
from __future__ import annotations

import copy
import functools
import hashlib
import ipaddress
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import user_file

SCHEMA_PATH = Path(__file__).with_name("spec_schema.yaml")
# The default spec ships inside the package (in the repository, a link to the top-level
# analytics.yaml), so an installed wheel renders and serves with no file of its own.
DEFAULT_SPEC = Path(__file__).resolve().with_name("analytics.yaml")
SPEC_ENV = "CVAT_ANALYTICS_SPEC"

# Columns that the ingest, the export, the working time and the dashboards rely on:
# CVAT's own 18, in CVAT's order.
CVAT_COLUMNS = (
    "scope", "obj_name", "obj_id", "obj_val", "source", "timestamp", "count", "duration",
    "project_id", "task_id", "job_id", "user_id", "user_name", "user_email", "org_id",
    "org_slug", "payload", "access_token_id",
)


class SpecError(Exception):
    """A spec mistake, already worded for the person who made it."""


def find_spec(explicit: str | Path | None = None) -> Path:
    """The spec to use: --spec, else $CVAT_ANALYTICS_SPEC, else ./analytics.yaml, else the
    packaged default."""
    if explicit:
        return Path(explicit)
    if os.environ.get(SPEC_ENV):
        return Path(os.environ[SPEC_ENV])
    local = Path("analytics.yaml")
    return local if local.is_file() else DEFAULT_SPEC


def load_schema() -> dict:
    return copy.deepcopy(_validator().schema)


def _pattern(validator, pattern, instance, schema):
    """JSON Schema's `pattern` as ECMA-262 reads it: `$` is the end of the string. The
    jsonschema package runs Python's re.search, whose `$` also matches before a final line
    break, so "admin\n" passed ^...$ and broke out of its line in a rendered manifest."""
    if validator.is_type(instance, "string") and not re.search(re.sub(r"(?<!\\)\$", r"\\Z", pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})


@functools.cache
def _validator_for(mtime_ns: int, size: int) -> jsonschema.Draft202012Validator:
    """The validator of the packaged schema as it is on disk (parsed once while it stays so)."""
    return _Validator(
        user_file.read_yaml(SCHEMA_PATH)[0], format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def _validator() -> jsonschema.Draft202012Validator:
    stat = SCHEMA_PATH.stat()
    return _validator_for(stat.st_mtime_ns, stat.st_size)


# Specs that passed validation, by their text and the schema's identity: a spec read again
# (the packaged default, a test's file) is not parsed and validated again. Callers get a
# copy each, never the cached object, and a text that fails is checked every time.
_VALID_SPECS: dict[tuple[str, int], dict] = {}
_VALID_SPECS_KEPT = 32  # the oldest goes first past this many


def load_spec(path: str | Path | None = None) -> dict:
    """Read, parse and validate a spec file; raise SpecError naming file, line and key."""
    path = find_spec(path)
    try:
        text = user_file.read_text(path)
    except user_file.UserFileError as exc:
        raise SpecError(str(exc)) from None
    key = (hashlib.sha256(text.encode()).hexdigest(), id(_validator()))
    if key not in _VALID_SPECS:
        try:
            data, node = user_file.parse_yaml(text, path)
        except user_file.UserFileError as exc:
            raise SpecError(str(exc)) from None
        validate(data, path, node)
        if len(_VALID_SPECS) >= _VALID_SPECS_KEPT:
            _VALID_SPECS.pop(next(iter(_VALID_SPECS)), None)
        _VALID_SPECS[key] = copy.deepcopy(data)
    data = copy.deepcopy(_VALID_SPECS[key])
    if data.get("custom_dashboards_dir"):  # relative to the spec, wherever the command runs
        data["custom_dashboards_dir"] = str(path.parent / data["custom_dashboards_dir"])
    return data


def validate(data: Any, path: Path | str = "<spec>", node: yaml.Node | None = None) -> None:
    error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
    if error is not None:
        keys, expected = _describe(error)
        raise SpecError(_message(path, node, keys, expected))
    for keys, expected in _semantic_problems(data):
        raise SpecError(_message(path, node, keys, "expected " + expected))


def _describe(error: jsonschema.ValidationError) -> tuple[list, str]:
    """Turn a jsonschema error into (key path, what was expected)."""
    keys = list(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    wanted = schema.get("description")
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return keys + [extra[0]], f"unknown key; expected one of: {', '.join(allowed)}"
    if error.validator == "required":
        missing = error.message.split("'")[1]
        sub = schema.get("properties", {}).get(missing, {})
        hint = f" ({sub['description']})" if isinstance(sub, dict) and "description" in sub else ""
        return keys + [missing], f"missing key; expected it to be set{hint}"
    if error.validator == "type":
        want = wanted or f"a value of type {error.validator_value}"
        return keys, f"expected {want}, got {type(error.instance).__name__} {error.instance!r}"
    want = wanted or error.message
    return keys, f"expected {want}, got {error.instance!r}"


def _semantic_problems(spec: dict):
    """Rules a JSON Schema cannot say; yields (key path, expected)."""
    names = [c["name"] for c in spec["events"]["columns"]]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        yield ["events", "columns"], f"distinct column names; {dup!r} appears twice"
    core = [n for n in names if n in CVAT_COLUMNS]
    if core != list(CVAT_COLUMNS):
        missing = [n for n in CVAT_COLUMNS if n not in names]
        what = f"missing {', '.join(missing)}" if missing else "they are out of order"
        yield ["events", "columns"], f"CVAT's columns {', '.join(CVAT_COLUMNS)} in that order ({what})"
    client = set(spec["events"]["scopes"]["client"])
    for i, scope in enumerate(spec["working_time"]["collapsed_scopes"]):
        if scope not in client:
            yield ["working_time", "collapsed_scopes", i], f"a client scope from events.scopes.client, got {scope!r}"
    cluster = spec["clickhouse"]["cluster"]
    if cluster["insert_quorum"] > cluster["replicas"]:
        yield (["clickhouse", "cluster", "insert_quorum"],
               f"at most clickhouse.cluster.replicas ({cluster['replicas']}), got {cluster['insert_quorum']}")
    # A cluster server keeps itself to ratio x its container's limit: a dashboard query or a
    # refresh allowed more than that would be cut off by the server, not by its own cap.
    if cluster["shards"] * cluster["replicas"] > 1:
        server = spec["clickhouse"]["server"]
        cap = server["max_server_memory_usage_to_ram_ratio"] * server["cluster_memory_limit_bytes"]
        needs = max(spec["clickhouse"]["dashboards_max_memory_usage_bytes"],
                    spec["working_time"]["refresh_max_memory_mb"] * 2**20)
        if cap < needs:
            yield (["clickhouse", "server", "cluster_memory_limit_bytes"],
                   f"enough that clickhouse.server.max_server_memory_usage_to_ram_ratio "
                   f"({server['max_server_memory_usage_to_ram_ratio']}) of it holds a dashboard query "
                   f"(clickhouse.dashboards_max_memory_usage_bytes) and a refresh (working_time.refresh_max_memory_mb): "
                   f"at least {int(needs / server['max_server_memory_usage_to_ram_ratio'])}, "
                   f"got {server['cluster_memory_limit_bytes']}")
    # Events wait up to a refresh interval to be counted: a shorter limit would always fire.
    for condition, interval in (("working_time_stale", "refresh_interval_s"),
                                ("productivity_stale", "productivity_refresh_interval_s")):
        stale = spec["alerts"][condition]["max_age_minutes"]
        if stale * 60 <= 2 * spec["working_time"][interval]:
            yield (["alerts", condition, "max_age_minutes"],
                   f"more than twice working_time.{interval} ({spec['working_time'][interval]} s), "
                   f"got {stale} minutes")
    # Vector's metrics arrive once a scrape and its sink's batch (10 s, vector.yaml) have passed:
    # a shorter silence would fire between two rows.
    silent, scrape = spec["alerts"]["vector_silent"]["quiet_minutes"], spec["vector"]["metrics"]["scrape_interval_secs"]
    if silent * 60 <= 2 * (scrape + 10):
        yield (["alerts", "vector_silent", "quiet_minutes"],
               f"more than twice vector.metrics.scrape_interval_secs ({scrape} s) plus the metrics sink's 10 s "
               f"batch, got {silent} minutes")
    # A refresh spills its GROUP BY and sorts to disk past refresh_spill_mb, to stay under its cap.
    wt = spec["working_time"]
    if wt["refresh_spill_mb"] >= wt["refresh_max_memory_mb"]:
        yield (["working_time", "refresh_spill_mb"],
               f"less than working_time.refresh_max_memory_mb ({wt['refresh_max_memory_mb']}), got {wt['refresh_spill_mb']}")
    # Slots start on the hour, so a recompute from a slot's hour needs no per-slot row.
    if 3600 % wt["refresh_slot_s"]:
        yield ["working_time", "refresh_slot_s"], f"a divisor of 3600 (60, 300, 600, ...), got {wt['refresh_slot_s']}"
    users = spec["clickhouse"]["users"]
    if len(set(users.values())) != len(users):
        yield ["clickhouse", "users"], "a different user name for each role"
    try:
        ipaddress.IPv4Address(spec["bind_address"])
    except ValueError:
        yield ["bind_address"], f"an IPv4 address such as 127.0.0.1, got {spec['bind_address']!r}"
    ports = {
        "clickhouse.http_port": spec["clickhouse"]["http_port"],
        "clickhouse.native_port": spec["clickhouse"]["native_port"],
        "vector.port": spec["vector"]["port"],
        "grafana.port": spec["grafana"]["port"],
    }
    seen: dict[int, str] = {}
    for key, port in ports.items():
        if port in seen:
            yield key.split("."), f"a port not already used by {seen[port]}, got {port}"
        seen[port] = key
    # Inside its container ClickHouse already listens on the image's ports (HTTP, native,
    # MySQL, PostgreSQL, interserver): the Prometheus endpoint needs another, or the server fails to start.
    prometheus = spec["clickhouse"]["server"]["prometheus_port"]
    if prometheus in (8123, 9000, 9004, 9005, 9009):
        yield (["clickhouse", "server", "prometheus_port"],
               f"a port ClickHouse does not already listen on in its container (8123, 9000, 9004, 9005, 9009), "
               f"got {prometheus}")
    for key in ("name", "secret_env"):
        values = [t[key] for t in spec["access"]["tokens"]]
        for i, value in enumerate(values):
            if value in values[:i]:
                yield ["access", "tokens", i, key], f"a {key} no other token has, got {value!r} twice"


def warnings(spec: dict) -> list[str]:
    """What a valid spec may want but should say it means: `render` and `check` print these."""
    cluster = spec["clickhouse"]["cluster"]
    if cluster["replicas"] > 1 and cluster["insert_quorum"] == cluster["replicas"]:
        return [f"clickhouse.cluster: insert_quorum {cluster['insert_quorum']} of {cluster['replicas']} replicas: "
                "every batch touches every shard, so one replica's restart (an upgrade, a crash) stops all ingest "
                "until it is back; 3 replicas with insert_quorum 2 keep ingesting through it (docs/cluster.md)"]
    return []


def _message(path, node, keys: list, expected: str) -> str:
    dotted = ".".join(str(k) for k in keys) or "(top level)"
    line = _line_of(node, keys)
    where = f"{path}:{line}" if line else str(path)
    return f"{where}: {dotted}: {expected}"


def _line_of(node: yaml.Node | None, keys: list) -> int | None:
    """The 1-based line of the deepest node on `keys` that exists in the file."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for key in keys:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    child, line = v, k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def value(spec: dict, dotted: str) -> Any:
    """spec["a"]["b"] for "a.b"."""
    node: Any = spec
    for key in dotted.split("."):
        node = node[key]
    return node


def main(argv: list[str]) -> int:
    """`python -m cvat_analytics_generator.spec SPEC KEY...`: print each value on a line
    (for scripts/up.sh); a bad spec is one line on stderr and exit 2, never a traceback."""
    import sys

    try:
        spec = load_spec(argv[0])
        for dotted in argv[1:]:
            print(value(spec, dotted))
    except SpecError as exc:
        print(f"cvat-analytics: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
