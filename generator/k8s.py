"""The Kubernetes render (`cvat-analytics render --target k8s`): manifests for the Altinity
clickhouse-operator (a ClickHouseInstallation and a ClickHouseKeeperInstallation), a Job
that applies the cluster's migrations, Vector as a StatefulSet and Grafana, with a
kustomization. They carry the compose render's own files (ClickHouse's config and users,
Vector's config, Grafana's provisioning and dashboards) byte for byte, rendered in the
cluster's form; `problems()` is what `check --target k8s` proves of them."""
from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

from . import grafana
from .cluster_ddl import shards_ledger_row
from .render import CLUSTER_INIT_TEMPLATE, _applied, _render_templates, context, environment, ledger_statements
from .sql import checksum, parse
from .yaml_load import safe_load, safe_load_all

MANIFESTS = ["clickhouse.yaml", "keeper.yaml", "migrate.yaml", "vector.yaml", "grafana.yaml"]
CONFIGMAP_MAX_BYTES = 1024 * 1024  # the API server refuses a larger ConfigMap (etcd's value limit)


class K8sSpecError(Exception):
    """The spec cannot be rendered for Kubernetes (no `kubernetes` section)."""


def render_k8s(spec: dict) -> dict[str, str]:
    """The manifests: file name -> text."""
    if "kubernetes" not in spec:
        raise K8sSpecError("the spec has no `kubernetes` section (namespace, secret_name, ...): "
                           "copy it from the packaged analytics.yaml (`cvat-analytics init`)")
    files = _render_templates(spec, k8s=True)
    for d in grafana.load_all(spec):
        files[f"grafana/dashboards/{d['name']}.json"] = grafana.definition_json(d, spec)
    migrations = sorted((PurePosixPath(rel).name, text) for rel, text in files.items()
                        if rel.startswith("clickhouse/migrations/") and rel.endswith(".sql"))
    compose_grafana = safe_load(files["docker-compose.yml"])["services"]["grafana"]
    ctx = {
        **context(spec, k8s=True),
        "files": files,
        "migrations": migrations,
        "checksums": {name: checksum([s.sql for s in parse(text, name, options={"reapply"}).statements])
                      for name, text in migrations},
        "schema_digest": hashlib.sha256("".join(t for _, t in migrations).encode()).hexdigest()[:10],
        # The compose render's Grafana settings, less the two it fills from .env (secrets here).
        "grafana_env": [(k, str(v)) for k, v in compose_grafana["environment"].items() if "${" not in str(v)],
        "grafana_health_path": "/" + compose_grafana["healthcheck"]["test"][-1].split("/", 3)[3],
        "grafana_provisioning": sorted(rel.removeprefix("grafana/provisioning/") for rel in files
                                       if rel.startswith("grafana/provisioning/")),
        "grafana_dashboards": sorted(PurePosixPath(rel).name for rel in files if rel.startswith("grafana/dashboards/")),
        "resources": MANIFESTS,
    }
    ctx["ledger_record"] = ledger_statements(spec)["record"]
    env = environment()
    # The compose cluster's first-start script, as it renders it: the Job runs the same file.
    ctx["apply_script"] = env.get_template(CLUSTER_INIT_TEMPLATE).render(
        {**ctx, "migrations": _applied(files), "shards_row": shards_ledger_row(spec)})
    ctx["create_database_on_cluster"] = env.from_string(
        "{% import 'cluster/clickhouse/cluster.jinja' as cl with context %}{{ cl.create_database(on_cluster=true) }}"
    ).render(ctx)
    ctx["migrate_script"] = env.get_template("k8s/migrate.sh.j2").render(ctx)
    out = {name: env.get_template(f"k8s/{name}.j2").render(ctx) for name in MANIFESTS}
    out["kustomization.yaml"] = env.get_template("k8s/kustomization.yaml.j2").render(ctx)
    return out


def documents(files: dict[str, str]) -> list[tuple[str, dict]]:
    """Every manifest of the render, with the file it is in."""
    return [(name, doc) for name, text in sorted(files.items()) if name != "kustomization.yaml"
            for doc in safe_load_all(text) if doc]


def problems(files: dict[str, str]) -> list[str]:
    """What would make the render unsafe or lose data, each naming file, kind and name."""
    found = []
    docs = documents(files)
    kinds = {(doc["kind"], doc["metadata"]["name"]): (name, doc) for name, doc in docs}
    for name, doc in docs:
        where = f"{name}: {doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] == "Secret":
            found.append(f"{where}: a Secret in the render (secrets are the operator's, never rendered)")
        for path, value in _walk(doc):
            leaf = path.rsplit("/", 1)[-1].lower()
            if isinstance(value, str) and (leaf.endswith("password") or path.endswith("/secret/value")):
                found.append(f"{where}: {path} holds a literal value (use valueFrom.secretKeyRef)")
            if path.endswith("/env") and isinstance(value, list):
                for var in value:
                    if any(w in var["name"].upper() for w in ("PASSWORD", "SECRET")) and "value" in var:
                        found.append(f"{where}: env {var['name']} is a literal (use valueFrom.secretKeyRef)")
            if leaf == "image" and isinstance(value, str) and (":" not in value.rsplit("/", 1)[-1] or value.endswith(":latest")):
                found.append(f"{where}: image {value} is not pinned to a version")
        if doc["kind"] == "ConfigMap":
            size = sum(len(v.encode()) for v in doc.get("data", {}).values())
            if size > CONFIGMAP_MAX_BYTES:
                found.append(f"{where}: {size} bytes, more than a ConfigMap holds ({CONFIGMAP_MAX_BYTES})")
    vector = kinds.get(("StatefulSet", "vector"))
    if vector is None:
        found.append("vector.yaml: Vector is not a StatefulSet (a rescheduled Deployment pod loses its disk buffer "
                     "and the events in it, already acknowledged to CVAT)")
    else:
        claims = {c["metadata"]["name"] for c in vector[1]["spec"].get("volumeClaimTemplates", [])}
        mounts = {m["mountPath"]: m["name"] for c in vector[1]["spec"]["template"]["spec"]["containers"]
                  for m in c.get("volumeMounts", [])}
        data_dir = safe_load(safe_load_all(files["vector.yaml"]).__next__()["data"]["vector.yaml"])["data_dir"]
        if mounts.get(data_dir) not in claims:
            found.append(f"vector.yaml: Vector's data_dir {data_dir} is not on a volume claim of its StatefulSet")
    for (kind, name), (file, doc) in kinds.items():
        if kind == "ClickHouseInstallation":
            found += _chi_problems(file, doc)
        if kind == "ClickHouseKeeperInstallation":
            terms = [t for pt in doc["spec"]["templates"]["podTemplates"]
                     for t in pt["spec"].get("affinity", {}).get("podAntiAffinity", {})
                     .get("requiredDuringSchedulingIgnoredDuringExecution", [])]
            if not any(t.get("topologyKey") == "kubernetes.io/hostname" for t in terms):
                found.append(f"{file}: Keeper nodes may share a Kubernetes node (no required podAntiAffinity by host)")
    return found


def _chi_problems(file: str, doc: dict) -> list[str]:
    found = []
    layout = doc["spec"]["configuration"]["clusters"][0]["layout"]
    distribution = [d for pt in doc["spec"]["templates"]["podTemplates"] for d in pt.get("podDistribution", [])]
    # pkg/model/common/affinity/pod-anti-affinity.go (operator 0.25.6): ShardAntiAffinity is a
    # required anti-affinity between pods of one shard, by the topology key given.
    if layout["replicasCount"] > 1 and not any(
            d["type"] == "ShardAntiAffinity" and d.get("topologyKey") == "kubernetes.io/hostname" for d in distribution):
        found.append(f"{file}: replicas of a shard may share a Kubernetes node (no ShardAntiAffinity by host): "
                     "losing that node loses the shard")
    cluster = doc["spec"]["configuration"]["clusters"][0]
    if "valueFrom" not in cluster.get("secret", {}):
        found.append(f"{file}: the cluster has no secret from a Secret: servers would query each other unauthenticated")
    return found


def _walk(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}/{key}", value
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}") if isinstance(value, (dict, list)) else ()
