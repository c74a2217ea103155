"""The Kubernetes render (`cvat-analytics render --target k8s`; docs/kubernetes.md).

No Kubernetes API server runs here; what decides whether a manifest is accepted runs instead:
- every core object (and every pod template and volume claim the operator's resources carry)
  against the Kubernetes OpenAPI schemas of the oldest and newest release we target, strict
  (an unknown field is an error, as `kubectl apply --validate=strict`), with kubernetes-validate;
- the operator's resources against the openAPIV3Schema of the Altinity clickhouse-operator's
  CRDs (0.25.6, vendored in tests/fixtures/k8s/), strict where the CRD does not preserve
  unknown fields, as the API server's structural schema validation and pruning would;
- `problems()` (what `check --target k8s` runs) on the render, and on renders broken the
  ways the issue names (replicas sharing a node, a password in a manifest, Vector as a
  Deployment), each caught.
"""
from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cvat_analytics.cli import main
from cvat_analytics.migrate import Migration
from cvat_analytics_generator import k8s
from cvat_analytics_generator.render import INIT_LEDGER, render_all
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.yaml_load import safe_load, safe_load_all
from tests.conftest import REPO, write_spec

KUBERNETES_VERSIONS = ["1.31.0", "1.37.0"]  # docs/kubernetes.md: the releases the manifests are validated against
CRDS = Path(__file__).parent / "fixtures" / "k8s" / "altinity-clickhouse-operator-0.25.6-crds.yaml"
LAYOUTS = [(1, 1), (2, 2), (5, 2)]


def spec_for(tmp_path: Path, shards: int, replicas: int) -> dict:
    _, path = write_spec(tmp_path, **{"clickhouse.cluster": {"shards": shards, "replicas": replicas,
                                                             "insert_quorum": min(2, replicas)}})
    return load_spec(path)


@pytest.fixture(scope="module", params=LAYOUTS, ids=lambda p: f"{p[0]}x{p[1]}")
def rendered(request, tmp_path_factory):
    spec = spec_for(tmp_path_factory.mktemp("k8s"), *request.param)
    return spec, k8s.render_k8s(spec)


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory) -> dict[str, str]:
    """One 2 x 2 render for the tests that break a copy of it."""
    return k8s.render_k8s(spec_for(tmp_path_factory.mktemp("k8s"), 2, 2))


# --- offline validation -----------------------------------------------------------------

def crd_schemas() -> dict[str, dict]:
    """kind -> a strict JSON Schema of the CRD's served version."""
    out = {}
    for crd in safe_load_all(CRDS.read_text()):
        version = next(v for v in crd["spec"]["versions"] if v.get("served"))
        out[crd["spec"]["names"]["kind"]] = _strict(version["schema"]["openAPIV3Schema"])
    return out


def _strict(schema: dict) -> dict:
    """OpenAPI v3 as the API server reads it: int-or-string, nullable, and unknown fields
    refused unless the schema preserves them."""
    schema = dict(schema)
    if schema.pop("x-kubernetes-int-or-string", False):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    if "properties" in schema:
        schema["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _strict(schema[key])
    return schema


CRD_SCHEMAS = crd_schemas()


def validate(doc: dict) -> list[str]:
    """Every error the API server (with the operator's CRDs installed) would give this object."""
    errors = []
    if doc["kind"] in CRD_SCHEMAS:
        validator = jsonschema.Draft7Validator(CRD_SCHEMAS[doc["kind"]])
        errors += [f"{doc['kind']} {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        # The pod templates and claims inside are core objects the operator creates as they are.
        for pt in doc["spec"].get("templates", {}).get("podTemplates", []):
            errors += core_errors({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pt["name"]}, "spec": pt["spec"]})
        for claim in doc["spec"].get("templates", {}).get("volumeClaimTemplates", []):
            errors += core_errors({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                   "metadata": {"name": claim["name"]}, "spec": claim["spec"]})
    else:
        errors += core_errors(doc)
    return errors


def core_errors(doc: dict) -> list[str]:
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']} {doc['metadata']['name']} (Kubernetes {version}): {exc.message} at {list(exc.path)}")
    return errors


def test_every_manifest_is_valid_for_kubernetes_and_the_operator(rendered):
    _, files = rendered
    docs = k8s.documents(files)
    assert {d["kind"] for _, d in docs} >= {"ClickHouseInstallation", "ClickHouseKeeperInstallation", "Job",
                                           "StatefulSet", "Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"}
    assert [e for _, d in docs for e in validate(d)] == []


def test_the_validation_catches_what_the_api_server_would_refuse(rendered):
    """The controls: a misspelt operator field, a misspelt core field, a wrong type."""
    _, files = rendered
    docs = dict(((d["kind"], d["metadata"]["name"]), d) for _, d in k8s.documents(files))
    chi = copy.deepcopy(docs[("ClickHouseInstallation", "cvat-analytics")])
    chi["spec"]["configuration"]["clusters"][0]["layout"]["shardCount"] = 2
    assert any("shardCount" in e for e in validate(chi))
    vector = copy.deepcopy(docs[("StatefulSet", "vector")])
    vector["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    assert any("volumeMount" in e for e in validate(vector))
    chk = copy.deepcopy(docs[("ClickHouseKeeperInstallation", "cvat-analytics")])
    chk["spec"]["templates"]["podTemplates"][0]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = ["1"]
    assert validate(chk)


def test_the_kustomization_lists_every_manifest_and_the_namespace(rendered):
    spec, files = rendered
    kustomization = safe_load(files["kustomization.yaml"])
    assert sorted(kustomization["resources"]) == sorted(n for n in files if n != "kustomization.yaml")
    assert kustomization["namespace"] == spec["kubernetes"]["namespace"]


# --- what the render must hold -----------------------------------------------------------

def test_the_layout_and_resources_come_from_the_spec(rendered):
    spec, files = rendered
    docs = dict(((d["kind"], d["metadata"]["name"]), d) for _, d in k8s.documents(files))
    chi = docs[("ClickHouseInstallation", "cvat-analytics")]
    layout = chi["spec"]["configuration"]["clusters"][0]["layout"]
    assert (layout["shardsCount"], layout["replicasCount"]) == (spec["clickhouse"]["cluster"]["shards"],
                                                               spec["clickhouse"]["cluster"]["replicas"])
    container = chi["spec"]["templates"]["podTemplates"][0]["spec"]["containers"][0]
    assert container["image"] == f"{spec['clickhouse']['image']}:{spec['clickhouse']['version']}"
    assert container["resources"]["limits"]["memory"] == spec["kubernetes"]["clickhouse"]["memory"]
    claim = chi["spec"]["templates"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == spec["kubernetes"]["clickhouse"]["storage"]
    keeper = docs[("ClickHouseKeeperInstallation", "cvat-analytics")]
    assert keeper["spec"]["configuration"]["clusters"][0]["layout"]["replicasCount"] == 3


def test_the_operator_gets_the_compose_renders_own_files(tmp_path):
    """ClickHouse's config and users, Vector's config and Grafana's dashboards are the files
    the compose render of the same cluster spec writes, byte for byte (no second copy to drift)."""
    spec = spec_for(tmp_path, 2, 2)
    compose, files = render_all(spec), k8s.render_k8s(spec)
    docs = dict(((d["kind"], d["metadata"]["name"]), d) for _, d in k8s.documents(files))
    chi_files = docs[("ClickHouseInstallation", "cvat-analytics")]["spec"]["configuration"]["files"]
    assert chi_files["config.d/cvat.xml"] == compose["clickhouse/config.d/cvat.xml"]
    assert chi_files["users.d/cvat-users.xml"] == compose["clickhouse/users.d/cvat-users.xml"]
    assert docs[("ConfigMap", "cvat-analytics-vector")]["data"]["vector.yaml"] == compose["vector/vector.yaml"]
    assert docs[("ConfigMap", "cvat-analytics-dashboard-monitoring")]["data"]["monitoring.json"] == \
        compose["grafana/dashboards/monitoring.json"]
    migrations = docs[("ConfigMap", "cvat-analytics-migrations")]["data"]
    assert {n: t for n, t in migrations.items() if n.endswith(".sql")} == {  # the Job records them itself
        Path(p).name: t for p, t in compose.items() if p.startswith("clickhouse/migrations/") and p != INIT_LEDGER}
    # No password user for servers to log in to each other: the cluster's secret, in both.
    assert "cvat_cluster" not in compose["clickhouse/users.d/cvat-cluster.xml"]
    assert "cvat_cluster" not in chi_files["users.d/cvat-cluster.xml"]


def test_the_migrate_job_runs_the_compose_clusters_first_start_script(rendered, tmp_path):
    """One script, two callers: the Job's ConfigMap carries apply-migrations.sh as the compose
    cluster render writes it, byte for byte (each migration once, in order, with migrate's
    checksum, then the shard count); the Job creates the database ON CLUSTER and sources it
    against shard 1's first replica."""
    spec, files = rendered
    docs = dict(((d["kind"], d["metadata"]["name"]), d) for _, d in k8s.documents(files))
    data = docs[("ConfigMap", "cvat-analytics-migrations")]["data"]
    shards = spec["clickhouse"]["cluster"]["shards"]
    # the compose render of the same shards (1 x 1 has no cluster files there: 1 x 2)
    compose = render_all({**spec, "clickhouse": {**spec["clickhouse"], "cluster": (
        spec["clickhouse"]["cluster"] if shards > 1 else {"shards": 1, "replicas": 2, "insert_quorum": 2})}})
    script = data["apply-migrations.sh"]
    assert script == compose["clickhouse/initdb-first/apply-migrations.sh"]
    listed = re.findall(r"^(\d{4}_\w+) ([0-9a-f]{64})$", script, re.M)
    names = sorted(n for n in data if n.endswith(".sql"))
    assert [name for name, _ in listed] == [n.removesuffix(".sql") for n in names]
    for name, checksum in listed:
        assert checksum == Migration(name, data[name + ".sql"]).checksum
    assert f"record 'cluster:shards' '{shards}'" in script
    job_script = data["migrate.sh"]
    for text in (job_script, script):
        subprocess.run(["bash", "-n"], input=text, text=True, check=True)  # bash parses both
    assert "CREATE DATABASE IF NOT EXISTS `cvat` ON CLUSTER cvat\nENGINE = Replicated(" in job_script
    assert "export CVAT_MIGRATE_HOST='chi-cvat-analytics-cvat-0-0'" in job_script
    assert job_script.rstrip().splitlines()[-2:] == ["source /migrations/apply-migrations.sh", 'echo "schema up to date"']
    assert '--host "${CVAT_MIGRATE_HOST:-127.0.0.1}"' in script
    job = next(d for (kind, _), d in docs.items() if kind == "Job")
    assert job["metadata"]["name"].startswith("cvat-analytics-migrate-")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["bash", "/migrations/migrate.sh"]


def test_a_changed_schema_renders_a_new_job_name(tmp_path):
    """An applied Job cannot be changed: a new schema must be a new Job."""
    spec = spec_for(tmp_path, 2, 2)
    first = safe_load_all(k8s.render_k8s(spec)["migrate.yaml"])
    spec["clickhouse"]["retention_days"] += 1
    second = safe_load_all(k8s.render_k8s(spec)["migrate.yaml"])
    job_name = lambda docs: next(d for d in docs if d["kind"] == "Job")["metadata"]["name"]  # noqa: E731
    assert job_name(first) != job_name(second)


# --- the faults check catches ------------------------------------------------------------

def edit(files: dict, name: str, change) -> dict:
    docs = list(safe_load_all(files[name]))
    for doc in docs:
        change(doc)
    return {**files, name: yaml.safe_dump_all(docs)}


def test_the_render_has_no_problem(rendered):
    assert k8s.problems(rendered[1]) == []


def test_replicas_of_a_shard_sharing_a_node_are_caught(two_by_two):
    files = two_by_two

    def drop(doc):
        if doc["kind"] == "ClickHouseInstallation":
            del doc["spec"]["templates"]["podTemplates"][0]["podDistribution"]
    assert any("may share a Kubernetes node" in p for p in k8s.problems(edit(files, "clickhouse.yaml", drop)))


def test_a_password_in_a_manifest_is_caught(two_by_two):
    files = two_by_two

    def literal(doc):
        if doc["kind"] == "ClickHouseInstallation":
            doc["spec"]["configuration"]["users"]["cvat_admin/password"] = "hunter2"
        if doc["kind"] == "StatefulSet":
            doc["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "CLICKHOUSE_PASSWORD", "value": "x"}]
    found = k8s.problems(edit(edit(files, "clickhouse.yaml", literal), "vector.yaml", literal))
    assert any("cvat_admin/password holds a literal" in p for p in found)
    assert any("env CLICKHOUSE_PASSWORD is a literal" in p for p in found)


def test_vector_as_a_deployment_is_caught(two_by_two):
    files = two_by_two

    def to_deployment(doc):
        if doc["kind"] == "StatefulSet":
            doc["kind"] = "Deployment"
            del doc["spec"]["volumeClaimTemplates"], doc["spec"]["serviceName"]
    assert any("not a StatefulSet" in p for p in k8s.problems(edit(files, "vector.yaml", to_deployment)))


def test_no_secret_from_the_environment_reaches_a_manifest(tmp_path, monkeypatch):
    """The passwords `make up` writes live in .env and the environment: the render never reads them."""
    secrets = {name: f"s3cret-{name.lower()}" for name in ["CLICKHOUSE_PASSWORD", "CLICKHOUSE_INGEST_PASSWORD",
                                                          "CLICKHOUSE_DASHBOARDS_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
                                                          "CLICKHOUSE_CLUSTER_SECRET", "CLICKHOUSE_INTERSERVER_PASSWORD",
                                                          "CLICKHOUSE_KEEPER_PASSWORD"]}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    files = k8s.render_k8s(spec_for(tmp_path, 2, 2))
    assert [(n, s) for n, text in files.items() for s in secrets.values() if s in text] == []


# --- the command -------------------------------------------------------------------------

@pytest.fixture
def run_cli(capsys):
    def run(*args):
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)
    return run


def test_render_and_check_with_target_k8s(tmp_path, run_cli):
    out = tmp_path / "deploy-k8s"
    assert run_cli("render", "--target", "k8s", "--out", str(out)).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(k8s.MANIFESTS + ["kustomization.yaml"])
    assert run_cli("check", "--target", "k8s", "--out", str(out)).returncode == 0
    (out / "vector.yaml").write_text((out / "vector.yaml").read_text().replace("StatefulSet", "Deployment"))
    failed = run_cli("check", "--target", "k8s", "--out", str(out))
    assert failed.returncode == 1
    assert "vector.yaml: differs from the render of the spec" in failed.stderr
    assert "--target k8s" in failed.stderr


def test_a_spec_without_a_kubernetes_section_is_refused_by_name(tmp_path, run_cli):
    text = (REPO / "analytics.yaml").read_text()
    spec = safe_load(text)
    del spec["kubernetes"]
    path = tmp_path / "analytics.yaml"
    path.write_text(yaml.safe_dump(spec))
    failed = run_cli("render", "--spec", str(path), "--target", "k8s", "--out", str(tmp_path / "out"))
    assert failed.returncode != 0 and "no `kubernetes` section" in failed.stderr
    assert not (tmp_path / "out").exists()
