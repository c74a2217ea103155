"""Render the spec through the Jinja2 templates beside this file into a deploy tree."""
from __future__ import annotations

import functools
import json
import re
import shutil
import tempfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

import jinja2

from . import grafana, user_cache
from .cluster_ddl import shards_ledger_row
from .sql import checksum, ident, parse, string_literal

TEMPLATES = Path(__file__).with_name("templates")
# Statements the runtime renders and runs itself (e.g. migrate's ledger): not deploy files.
RUNTIME = "clickhouse/runtime/"
# The cluster render (clickhouse.cluster above 1 x 1): templates under cluster/ land at the
# same path without the prefix, and replace these files of the single-server tree (CVAT's
# own stack runs one ClickHouse, so its override has no cluster form; `migrate` removes a
# cluster's TTL itself, cvat_analytics/cluster_migrate.py).
CLUSTER = "cluster/"
SINGLE_SERVER_ONLY = ("docker-compose.yml.j2", "cvat-compose.override.yml.j2", "vector/vector-cvat.yaml.j2",
                      "clickhouse/users.d/cvat-server-user.xml.j2", "clickhouse/queries/events_remove_ttl.sql.j2",
                      "clickhouse/migrations/", "clickhouse/queries/alerts.sql.j2")
# The last init script of a new volume (a single server's, or the cluster's first server's):
# the ledger of the migrations the init scripts before it applied (its template says why).
# Rendered after them, from their text.
INIT_LEDGER_TEMPLATE = "clickhouse/initdb/schema_migrations.sql.j2"
INIT_LEDGER = "clickhouse/migrations/9999_schema_migrations.sql"
# The ledger's statements `migrate` runs (`record` among them): the cluster's first-start
# script and the Kubernetes Job record a migration with the same INSERT.
LEDGER_TEMPLATE = "clickhouse/runtime/schema_migrations.sql.j2"
# The cluster's first start (docs/cluster.md): the first server's init script applies the
# migrations not yet in the ledger, and every server's healthcheck requires the schema they
# leave. Rendered after the migrations, from their text (checksums, the objects they create).
CLUSTER_INIT_TEMPLATE = "cluster/clickhouse/initdb-first/apply-migrations.sh.j2"
CLUSTER_HEALTH_TEMPLATE = "cluster/clickhouse/healthcheck.sh.j2"
AFTER_MIGRATIONS = (INIT_LEDGER_TEMPLATE, CLUSTER_INIT_TEMPLATE, CLUSTER_HEALTH_TEMPLATE)
_CREATED = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:TABLE|VIEW|MATERIALIZED\s+VIEW|DICTIONARY)\s+"
                      r"(?:IF\s+NOT\s+EXISTS\s+)?`?\w+`?\.`?(\w+)`?", re.MULTILINE)
_DROPPED = re.compile(r"^DROP\s+(?:TABLE|VIEW|DICTIONARY)\s+(?:IF\s+EXISTS\s+)?`?\w+`?\.`?(\w+)`?", re.MULTILINE)
# The Kubernetes manifests (`render --target k8s`, k8s.py): rendered only for that target.
K8S = "k8s/"
CLUSTER_NAME = "cvat"
KEEPER_NODES = 3


# Escapers: one per language a value can land in, so no spec value can break out
# of its quotes. JSON string syntax is valid YAML and TOML basic-string syntax.
def to_json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def sh_str(value) -> str:
    """One POSIX shell word, single-quoted."""
    return "'" + str(value).replace("'", "'\\''") + "'"


def xml_text(value) -> str:
    """XML character data (quoteattr also escapes <, > and &)."""
    return quoteattr(str(value))[1:-1]


def compiled_templates(environment_name: str) -> jinja2.BytecodeCache | None:
    """Templates compiled by one process, kept for the next in the user's cache: compiling
    this folder's templates was a quarter of `serve`'s start (0.45 of 1.9 CPU-s) and most of
    a `render`'s. Jinja checks each file's source (and the Python version) before using what
    is kept, so an edited template is compiled again. One file name per environment and Jinja
    version: another environment's options compile the same source to other code."""
    folder = user_cache.private_folder("templates")
    if folder is None:
        return None
    return jinja2.FileSystemBytecodeCache(str(folder), f"{environment_name}-jinja{jinja2.__version__}-%s.cache")


@functools.cache  # one per process: each template is compiled once, not on every render
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        bytecode_cache=compiled_templates("render"),
    )
    env.filters.update(json=to_json, yaml=to_json, toml=to_json, sql_str=string_literal,
                       sql_ident=ident, xml=xml_text, sh_str=sh_str)
    return env


def is_cluster(spec: dict) -> bool:
    cluster = spec["clickhouse"]["cluster"]
    return cluster["shards"] * cluster["replicas"] > 1


def cluster_layout(spec: dict) -> dict:
    """The servers and Keeper nodes of the cluster render (service names are host names)."""
    cluster = spec["clickhouse"]["cluster"]
    servers = [{"name": f"clickhouse-s{s}-r{r}", "shard": s, "replica": r}
               for s in range(1, cluster["shards"] + 1) for r in range(1, cluster["replicas"] + 1)]
    keepers = [{"name": f"clickhouse-keeper-{k}", "id": k} for k in range(1, KEEPER_NODES + 1)]
    return {"name": CLUSTER_NAME, "shards": cluster["shards"], "replicas": cluster["replicas"],
            "insert_quorum": cluster["insert_quorum"], "servers": servers, "keepers": keepers}


def context(spec: dict, k8s: bool = False) -> dict:
    """What every template sees: the spec and a few names derived from it. On Kubernetes
    the schema is always the cluster's, even at 1 x 1 (a shard can be added later)."""
    ch = spec["clickhouse"]
    return {
        "spec": spec,
        "cluster": cluster_layout(spec),
        "clustered": k8s or is_cluster(spec),
        "k8s": k8s,
        "db": ident(ch["database"]),
        "columns": spec["events"]["columns"],
        "column_names": [c["name"] for c in spec["events"]["columns"]],
    }


def template_names() -> list[str]:
    return sorted(
        str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*.j2") if p.is_file()
    )


def render_all(spec: dict) -> dict[str, str]:
    """Every rendered file of the deploy tree: relative path -> text."""
    out = _render_templates(spec)
    # Grafana's JSON of each dashboard, built from its definition: the built-in ones the
    # spec lists (generator/dashboards/<name>.yaml) and the user's own (custom_dashboards_dir).
    for d in grafana.load_all(spec):
        out[f"grafana/dashboards/{d['name']}.json"] = grafana.definition_json(d, spec)
    out[INIT_LEDGER] = _init_ledger(spec, out)
    if is_cluster(spec):
        for template in (CLUSTER_INIT_TEMPLATE, CLUSTER_HEALTH_TEMPLATE):
            out[template[: -len(".j2")].removeprefix(CLUSTER)] = environment().get_template(template).render(
                {**context(spec), "migrations": _applied(out), "objects": _schema_objects(out),
                 "shards_row": shards_ledger_row(spec), "ledger_record": ledger_statements(spec)["record"]})
    else:
        # The alert rules read one server's tables: a cluster's are per shard (docs/cluster.md).
        from .alerts import PROVISIONING, provisioning_yaml  # alerts renders through this module
        out[PROVISIONING] = provisioning_yaml(spec)
    return out


def ledger_statements(spec: dict) -> dict[str, str]:
    """The ledger's named statements (LEDGER_TEMPLATE), by name."""
    return {s.name: s.sql for s in parse(render_template(spec, LEDGER_TEMPLATE), LEDGER_TEMPLATE).statements}


def _applied(out: dict[str, str]) -> list[dict]:
    """Each rendered migration, in order, with the checksum migrate records and compares."""
    return [{"name": Path(rel).name.removesuffix(".sql"),
             "checksum": checksum([st.sql for st in parse(text, rel, options={"reapply"}).statements])}
            for rel, text in sorted(out.items()) if rel.startswith("clickhouse/migrations/") and rel != INIT_LEDGER and rel.endswith(".sql")]


def _init_ledger(spec: dict, out: dict[str, str]) -> str:
    """The last init script: a ledger row per migration, with the checksum migrate compares."""
    applied = _applied(out)
    if is_cluster(spec):  # and the shard count the data will be sharded with (cluster_ddl.py)
        name, count = shards_ledger_row(spec)
        applied.append({"name": name, "checksum": count})
    return environment().get_template(INIT_LEDGER_TEMPLATE).render({**context(spec), "migrations": applied})


def _schema_objects(out: dict[str, str]) -> list[str]:
    """The tables and views the rendered migrations leave, in order: each created and not
    dropped by a later statement."""
    objects: list[str] = []
    for rel, text in sorted(out.items()):
        if rel.startswith("clickhouse/migrations/") and rel.endswith(".sql"):
            for st in parse(text, rel, options={"reapply"}).statements:
                for name in _DROPPED.findall(st.sql):
                    objects = [o for o in objects if o != name]
                objects += [n for n in _CREATED.findall(st.sql) if n not in objects]
    return objects


def _render_templates(spec: dict, prefix: str = "", k8s: bool = False) -> dict[str, str]:
    """The files rendered from templates whose path starts with `prefix`: relative path -> text.
    With k8s, the cluster's files whatever the layout, as the Kubernetes manifests carry them."""
    env = environment()
    ctx = context(spec, k8s)
    out: dict[str, str] = {}
    for name in template_names():
        path = name[: -len(".j2")].removeprefix(CLUSTER)
        if path.startswith(prefix) and _wanted(name, ctx["clustered"]):
            out[path] = env.get_template(name).render(ctx)
    return out


def render_template(spec: dict, name: str, **extra) -> str:
    """One template (e.g. clickhouse/runtime/...) rendered for this spec."""
    return environment().get_template(name).render({**context(spec), **extra})


def _wanted(name: str, clustered: bool) -> bool:
    """Runtime statements, the Kubernetes manifests and the files of the other topology
    (single server or cluster) are not rendered."""
    if name.startswith((RUNTIME, K8S)) or name in AFTER_MIGRATIONS:
        return False
    if name.startswith(CLUSTER):
        return clustered
    if name.startswith(SINGLE_SERVER_ONLY) and clustered:
        return False
    return True


def render_sql(spec: dict, prefix: str, k8s: bool = False) -> dict[str, str]:
    """The rendered SQL files under a folder (e.g. clickhouse/migrations), by file name;
    with k8s, the cluster's whatever the layout (as the Kubernetes render has them)."""
    return {
        Path(path).name: text
        for path, text in _render_templates(spec, prefix + "/", k8s=k8s).items()  # not the whole tree: migrate runs this
        if path.endswith(".sql")
    }


def write_tree(files: dict[str, str], out: Path) -> None:
    """Write the tree to `out` all at once: rendered beside it, then swapped in, so a
    failure never leaves a half-written deploy directory."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel, text in files.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def diff_tree(files: dict[str, str], out: Path) -> list[str]:
    """Paths where `out` differs from the rendered files (missing, changed or extra)."""
    out = Path(out)
    problems = []
    for rel, text in sorted(files.items()):
        target = out / rel
        if not target.is_file():
            problems.append(f"{rel}: missing")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"{rel}: differs from the render of the spec")
    if out.is_dir():
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            rel = str(path.relative_to(out))
            if rel not in files:
                problems.append(f"{rel}: not produced by the spec (stale file)")
    return problems
