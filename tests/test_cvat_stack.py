"""deploy/cvat-compose.override.yml inside CVAT's own compose project.

CVAT's real compose files (tests/fixtures/cvat/<release>/, vendored unchanged for every
release where an analytics fact changes, 2.22 to 2.73) are merged with the override
rendered for that release by the Compose v2 binary, and the merged configuration is read
the way the containers would read it: where CVAT's backends send events and whether our
Vector listens there and writes every field CVAT's Vector of that release writes; which ClickHouse user CVAT's services log in as and whether the override
creates it with the grants CVAT's start-up DDL and export need; that our migration runs
before them; how Grafana meets CVAT's forwardAuth; which host ports are published. On
chdb: adopting CVAT's existing table keeps every event and sets no TTL unless asked.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cvat_analytics import store as store_module
from cvat_analytics.migrate import migrate
from cvat_analytics.retention import RetentionRefused
from cvat_analytics_generator.render import render_all, write_tree
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.validate import compose_binary, vector_problems
from cvat_analytics_generator.yaml_load import safe_load

from .conftest import write_spec

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cvat"
RELEASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
REPLACED = {"cvat_clickhouse", "cvat_vector", "cvat_grafana"}  # CVAT's, replaced by ours
SECRETS = ("CLICKHOUSE_ADMIN_PASSWORD", "CLICKHOUSE_INGEST_PASSWORD", "CLICKHOUSE_DASHBOARDS_PASSWORD",
           "CLICKHOUSE_CVAT_SERVER_PASSWORD", "GRAFANA_ADMIN_PASSWORD")


def test_every_release_where_an_analytics_fact_changes_is_vendored_with_its_commit():
    notes = (FIXTURES / "README.md").read_text()
    assert {"v2.22.0", "v2.43.0", "v2.44.0", "v2.45.0", "v2.48.0", "v2.64.0", "v2.65.0", "v2.66.0",
            "v2.70.0", "v2.73.0"} <= set(RELEASES)
    for release in RELEASES:
        assert re.search(rf"\| `{re.escape(release)}/` \| [0-9.]+ \| [0-9a-f]{{40}} \|", notes), release


# --- the merged configuration ----------------------------------------------------------

class Stack:
    """CVAT <release>'s compose file merged with the override rendered for it."""

    def __init__(self, tmp_path: Path, release: str, **spec_changes):
        tmp_path.mkdir(parents=True, exist_ok=True)
        changes = {"cvat_stack.cvat_version": release.lstrip("v"), **spec_changes}
        _, spec_path = write_spec(tmp_path, **changes)
        self.spec = load_spec(spec_path)
        self.deploy = tmp_path / "deploy"
        write_tree(render_all(self.spec), self.deploy)
        self.cvat_file = FIXTURES / release / "docker-compose.yml"
        self.env = {**{n: f"secret-{n.lower()}" for n in SECRETS}, "CVAT_ANALYTICS_DEPLOY": str(self.deploy)}
        run = subprocess.run(compose_binary() + ["-f", "docker-compose.yml", "-f", str(self.deploy / "cvat-compose.override.yml"),
                                                 "config", "--format", "json"],
                             capture_output=True, text=True, cwd=FIXTURES / release, timeout=120,
                             env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **self.env})
        assert run.returncode == 0, run.stderr
        self.services = json.loads(run.stdout)["services"]

    def cvat_services(self) -> dict[str, dict]:
        """CVAT's own services (not the three the override replaces), as merged."""
        own = safe_load(self.cvat_file.read_text())["services"]
        return {name: self.services[name] for name in own if name not in REPLACED}

    def clickhouse_clients(self) -> dict[str, dict]:
        return {n: s for n, s in self.cvat_services().items() if "CLICKHOUSE_USER" in (s.get("environment") or {})}

    def by_alias(self, alias: str) -> dict:
        [service] = [s for s in self.services.values()
                     if alias in ((s.get("networks") or {}).get("cvat") or {}).get("aliases", [])]
        return service

    def mounted(self, service: dict, target: str) -> Path:
        [volume] = [v for v in service["volumes"] if v["target"] == target]
        return Path(volume["source"])


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """release -> the default spec's Stack for it, merged once for the module's tests."""
    made = {}

    def get(release: str) -> Stack:
        if release not in made:
            made[release] = Stack(tmp_path_factory.mktemp(release), release)
        return made[release]
    return get


@pytest.mark.parametrize("release", RELEASES)
def test_the_override_replaces_cvats_three_services_keeping_names_and_aliases(stacks, release):
    stack = stacks(release)
    spec = stack.spec
    ch, vec, gf = (stack.services[n] for n in ("cvat_clickhouse", "cvat_vector", "cvat_grafana"))
    assert [stack.by_alias(a) for a in ("clickhouse", "vector", "grafana")] == [ch, vec, gf]
    assert ch["image"] == f"{spec['clickhouse']['image']}:{spec['clickhouse']['version']}"
    assert ch["environment"]["CLICKHOUSE_USER"] == spec["clickhouse"]["users"]["admin"]
    assert ch["environment"]["CLICKHOUSE_PASSWORD"] == stack.env["CLICKHOUSE_ADMIN_PASSWORD"]  # not CVAT's user/user
    assert [v["source"] for v in ch["volumes"] if v["target"].rstrip("/") == "/var/lib/clickhouse"] == ["cvat_events_db"]
    assert not any("init.sh" in v["source"] for v in ch["volumes"])  # CVAT's init script: replaced by ours
    assert vec["image"] == f"{spec['vector']['image']}:{spec['vector']['version']}"
    assert "CLICKHOUSE_PASSWORD" not in (vec.get("environment") or {})
    assert [v["target"] for v in vec["volumes"]] == ["/etc/vector/vector.yaml", "/var/lib/vector",
                                                     "/var/lib/vector-dead-letters"]
    assert gf["entrypoint"] == ["/run.sh"]
    assert "GF_INSTALL_PLUGINS" not in gf["environment"] and "CLICKHOUSE_PASSWORD" not in gf["environment"]
    assert gf["environment"]["GF_SERVER_SERVE_FROM_SUB_PATH"] == "false"  # Traefik strips /analytics
    assert gf["healthcheck"]["test"][-1] == "http://127.0.0.1:3000/api/health"
    for service in (ch, vec, gf):
        assert "healthcheck" in service and service["restart"] == "unless-stopped"


@pytest.mark.parametrize("release", RELEASES)
def test_vector_runs_as_cvats_non_root_user_on_volumes_handed_to_that_user_first(stacks, release):
    stack = stacks(release)
    vector = stack.by_alias("vector")
    # CVAT's own hardening (2.44+: user 1000:1000), kept for every release.
    cvats = safe_load(stack.cvat_file.read_text())["services"]["cvat_vector"].get("user")
    assert vector["user"] == (cvats or "1000:1000") == "1000:1000"
    uid_gid = vector["user"]
    written = {v["target"]: v["source"] for v in vector["volumes"] if v["type"] == "volume"}
    assert set(written) == {"/var/lib/vector", "/var/lib/vector-dead-letters"}
    # A named volume is created root-owned: a one-shot service with Vector's own image
    # chowns exactly those volumes to that user before Vector starts.
    [(name, init)] = [(n, s) for n, s in stack.services.items()
                      if n in vector["depends_on"] and s.get("entrypoint") and s["entrypoint"][0] == "chown"]
    assert vector["depends_on"][name]["condition"] == "service_completed_successfully"
    assert init["image"] == vector["image"] and init["restart"] == "no" and init["network_mode"] == "none"
    assert init["entrypoint"][:3] == ["chown", "-R", uid_gid]
    mounted = {v["target"]: v["source"] for v in init["volumes"]}
    assert set(init["entrypoint"][3:]) == set(written) and all(mounted[t] == s for t, s in written.items())
    assert init["cap_drop"] == ["ALL"] and set(init["cap_add"]) <= {"CHOWN", "DAC_READ_SEARCH"}
    # The ingest password's file is readable by that user too.
    assert [(s["source"], int(str(s["mode"]), 8)) for s in vector["secrets"]] == [("clickhouse_ingest_password", 0o444)]
    # Below 1024 (CVAT up to 2.43 sends to port 80) the port is opened to that user
    # in the container's own network namespace.
    low = {p for p in vector_ports(stack) if p < 1024}
    assert (vector.get("sysctls") or {}).get("net.ipv4.ip_unprivileged_port_start") == ("0" if low else None)


@pytest.mark.parametrize("release", RELEASES)
def test_clickhouse_is_healthy_through_its_network_alias_not_loopback(stacks, release):
    clickhouse = stacks(release).by_alias("clickhouse")
    url = clickhouse["healthcheck"]["test"][-1]
    # The init-phase server listens on 127.0.0.1 only: the alias reaches only the real one.
    assert re.fullmatch(r"http://(\w+):8123/ping", url).group(1) in clickhouse["networks"]["cvat"]["aliases"]


@pytest.mark.parametrize("release", RELEASES)
def test_clickhouse_runs_none_of_our_migrations_as_image_init_scripts(stacks, release):
    stack = stacks(release)
    clickhouse = stack.by_alias("clickhouse")
    # cvat_analytics_migrate applies them, after ClickHouse is healthy; the image would run
    # them on a new volume, rendered with the standalone retention.
    assert not [v for v in clickhouse["volumes"] if v["target"].startswith("/docker-entrypoint-initdb.d")]
    migrations = stack.deploy / "clickhouse" / "migrations"
    assert not [v for v in clickhouse["volumes"] if Path(v.get("source", "")).is_relative_to(migrations)]


def vector_config(stack: Stack) -> dict:
    """The config the Vector that answers as `vector` loads."""
    vector = stack.by_alias("vector")
    command = vector["command"]
    return safe_load(stack.mounted(vector, command[command.index("--config") + 1]).read_text())


def vector_ports(stack: Stack) -> set[int]:
    """The ports the Vector that answers as `vector` listens on, from the config it loads."""
    return {int(s["address"].rsplit(":", 1)[1]) for s in vector_config(stack)["sources"].values()
            if s["type"] == "http_server"}


def cvats_vector_fields(release: str) -> list[str]:
    """What CVAT's own Vector of that release writes of each event (vector.toml, only_fields)."""
    config = tomllib.loads((FIXTURES / release / "components/analytics/vector/vector.toml").read_text())
    [sink] = [s for s in config["sinks"].values() if s["type"] == "clickhouse"]
    return sink["encoding"]["only_fields"]


@pytest.mark.parametrize("release", RELEASES)
def test_our_vector_writes_every_field_cvats_vector_of_that_release_writes(stacks, release):
    stack = stacks(release)
    config = vector_config(stack)
    assert vector_problems(config) == []  # Vector's own schema, as `check` runs it
    [sink] = [s for s in config["sinks"].values() if s["type"] == "clickhouse" and s["table"] == "events"]
    ours = sink["encoding"]["only_fields"]
    theirs = cvats_vector_fields(release)
    assert set(theirs) <= set(ours), (release, set(theirs) - set(ours))
    # 2.66 is where CVAT starts sending the client's address (an older CVAT sends none:
    # forwarding it costs nothing and survives a CVAT upgrade without a re-render).
    assert ("remote_addr" in theirs) == (release >= "v2.66.0") and "remote_addr" in ours


@pytest.mark.parametrize("release", RELEASES)
def test_vector_listens_on_the_port_cvats_backends_send_to(stacks, release):
    stack = stacks(release)
    senders = {n: s["environment"] for n, s in stack.cvat_services().items()
               if (s.get("environment") or {}).get("DJANGO_LOG_SERVER_HOST") == "vector"}
    assert "cvat_server" in senders
    listening = vector_ports(stack)
    for name, env in senders.items():
        assert int(env["DJANGO_LOG_SERVER_PORT"]) in listening, (release, name, listening)
    # The standalone stack keeps its own port.
    standalone = safe_load((stack.deploy / "vector" / "vector.yaml").read_text())
    assert standalone["sources"]["cvat_events"]["address"] == f"0.0.0.0:{stack.spec['vector']['port']}"


def granted(user: ET.Element) -> set[tuple[str, str, str]]:
    """(privilege, database, table) of each `GRANT priv[, priv] ON db.table` of a users.d user."""
    out = set()
    for query in user.findall("grants/query"):
        m = re.fullmatch(r"GRANT (.+) ON `?(\w+)`?\.`?(\w+|\*)`?", query.text.strip())
        assert m, query.text
        out |= {(p.strip(), m.group(2), m.group(3)) for p in m.group(1).split(",")}
    return out


def cvat_needs(release: str, database: str) -> set[tuple[str, str, str]]:
    """What CVAT's services run as CLICKHOUSE_USER: the export's `SELECT * FROM events`
    (cvat/apps/events/export.py; the analytics-reports worker of 2.22-2.31 only reads too)
    and, where CVAT has init.py (2.45+; cvat_server runs it at every start), its DDL, read
    from CVAT's own file. Before, init.sh was a ClickHouse init script run by the image as
    its admin, which the override replaces by our migrations."""
    needs = {("SELECT", database, "events")}
    init_py = FIXTURES / release / "components/analytics/clickhouse/init.py"
    for text in [init_py.read_text()] if init_py.exists() else []:
        if re.search(r"CREATE DATABASE IF NOT EXISTS", text):
            needs.add(("CREATE DATABASE", database, "*"))
        if re.search(r"CREATE TABLE IF NOT EXISTS \S*events", text):
            needs.add(("CREATE TABLE", database, "events"))
        if re.search(r"ALTER TABLE events\s+ADD COLUMN IF NOT EXISTS", text):
            needs.add(("ALTER ADD COLUMN", database, "events"))
    return needs


def covers(grants: set[tuple[str, str, str]], need: tuple[str, str, str]) -> bool:
    privilege, database, table = need
    return any(p == privilege and d == database and t in ("*", table) for p, d, t in grants)


@pytest.mark.parametrize("release", RELEASES)
def test_cvats_services_log_in_as_a_user_the_override_creates_with_what_cvat_runs(stacks, release):
    stack = stacks(release)
    clickhouse = stack.by_alias("clickhouse")
    users = {}
    for volume in clickhouse["volumes"]:
        if volume["target"].startswith("/etc/clickhouse-server/users.d/"):
            for user in ET.fromstring(Path(volume["source"]).read_text()).find("users"):
                users[user.tag] = user
    clients = stack.clickhouse_clients()
    assert {"cvat_server", "cvat_worker_export"} <= set(clients)
    database = stack.spec["clickhouse"]["database"]
    needs = cvat_needs(release, database)
    for name, service in clients.items():
        env = service["environment"]
        assert env["CLICKHOUSE_HOST"] == "clickhouse" and env["CLICKHOUSE_DB"] == database, name
        user = users.get(env["CLICKHOUSE_USER"])
        assert user is not None, f"{release}: {name} logs in as {env['CLICKHOUSE_USER']!r}, a user no users.d file creates"
        password_var = user.find("password").attrib["from_env"]
        assert clickhouse["environment"][password_var] == env["CLICKHOUSE_PASSWORD"], name
        grants = granted(user)
        assert all(covers(grants, need) for need in needs), (release, needs, grants)
        # Least privilege: nothing beyond what CVAT runs (no INSERT, DROP, ALTER, ...).
        assert {p for p, _, _ in grants} <= {p for p, _, _ in needs} and {d for _, d, _ in grants} == {database}
        assert env["CLICKHOUSE_USER"] == stack.spec["clickhouse"]["users"]["cvat_server"]


@pytest.mark.parametrize("release", RELEASES)
def test_the_migration_runs_after_clickhouse_is_healthy_and_before_cvats_clickhouse_clients(stacks, release):
    stack = stacks(release)
    migrators = [(n, s) for n, s in stack.services.items()
                 if "cvat-analytics migrate" in " ".join((s.get("entrypoint") or []) + (s.get("command") or []))]
    assert len(migrators) == 1, f"{release}: no one service runs cvat-analytics migrate"
    [(name, migrator)] = migrators
    clickhouse = next(n for n, s in stack.services.items() if s is stack.by_alias("clickhouse"))
    assert migrator["depends_on"][clickhouse]["condition"] == "service_healthy"
    assert migrator["restart"] == "no" and migrator["environment"]["CLICKHOUSE_USER"] == stack.spec["clickhouse"]["users"]["admin"]
    for client, service in stack.clickhouse_clients().items():
        assert service["depends_on"].get(name, {}).get("condition") == "service_completed_successfully", (release, client)


@pytest.mark.slow
@pytest.mark.parametrize("release", RELEASES)
def test_grafana_behind_cvats_forward_auth_is_cvats_anonymous_admin_by_default(stacks, tmp_path, release):
    stack = stacks(release)
    traefik = stack.services["traefik"]
    rules = safe_load(stack.mounted(traefik, "/etc/traefik/rules/grafana_conf.yml").read_text())["http"]
    router = rules["routers"]["grafana"]
    assert "analytics-auth" in router["middlewares"]
    assert rules["middlewares"]["analytics-auth"]["forwardauth"]["address"] == "http://cvat_server:8080/analytics"
    url = rules["services"]["grafana"]["loadBalancer"]["servers"][0]["url"]
    upstream = re.sub(r'\{\{ env "(\w+)" \}\}', lambda m: str(traefik["environment"][m.group(1)]), url)
    host, port = upstream.removeprefix("http://").split(":")
    grafana = stack.by_alias(host)
    env = grafana["environment"]
    assert env["GF_SERVER_HTTP_PORT"] == port
    assert (env["GF_AUTH_ANONYMOUS_ENABLED"], env["GF_AUTH_ANONYMOUS_ORG_ROLE"]) == ("true", "Admin")

    login = Stack(tmp_path / "login", release, **{"cvat_stack.grafana_auth_mode": "login"})
    assert login.by_alias("grafana")["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


# Every character that means something in a URL's user info, or as a percent escape.
URL_PASSWORD = "p@ss:w/rd#50%4?x"


@pytest.mark.parametrize("release", [RELEASES[0], RELEASES[-1]])
def test_the_migration_passes_the_admin_password_apart_from_its_dsn(stacks, release, monkeypatch):
    stack = stacks(release)
    migrator = stack.services["cvat_analytics_migrate"]
    script = migrator["entrypoint"][-2].replace("$$", "$")  # what Compose hands the container
    [dsn_word] = set(re.findall(r'--dsn ("[^"]*"|\S+)', script))  # the backup step's and migrate's, alike
    # Expanded by the container's shell with the service's environment and a password
    # holding every URL character.
    env = {**migrator["environment"], "CLICKHOUSE_PASSWORD": URL_PASSWORD, "PATH": os.environ["PATH"]}
    dsn = subprocess.run(["sh", "-c", f"printf %s {dsn_word}"], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert URL_PASSWORD not in dsn  # nor in the process list
    monkeypatch.setenv("CLICKHOUSE_PASSWORD", URL_PASSWORD)
    url, login = store_module.server_dsn(dsn)
    assert url == "http://clickhouse:8123"
    assert login == {"username": stack.spec["clickhouse"]["users"]["admin"], "password": URL_PASSWORD}


@pytest.mark.clickhouse
def test_a_password_holding_url_characters_reaches_the_server_encoded_or_from_the_environment(
        make_served, store, monkeypatch):
    from urllib.parse import quote

    from cvat_analytics.service.access import Principal, Token

    srv = make_served(tokens=[Token(URL_PASSWORD.encode(), Principal("analyst", frozenset({"sql"})))])
    host, port = srv.server_address[:2]
    count = f"SELECT count() FROM `{store.database}`.events"
    encoded = store_module.connect(f"http://analyst:{quote(URL_PASSWORD, safe='')}@{host}:{port}/clickhouse")
    assert encoded.query(count).result_rows == [(0,)]
    monkeypatch.setenv("CLICKHOUSE_PASSWORD", URL_PASSWORD)
    apart = store_module.connect(f"http://analyst@{host}:{port}/clickhouse")
    assert apart.query(count).result_rows == [(0,)]
    assert store_module.open_handle(f"http://analyst@{host}:{port}/clickhouse").query(count).result_rows == [(0,)]
    # Written raw into the URL it cannot be read back: refused with how to write it,
    # without printing what is left of the password.
    with pytest.raises(store_module.StoreError, match="percent-encode") as refused:
        store_module.connect(f"http://analyst:{URL_PASSWORD}@{host}:{port}/clickhouse")
    assert "w/rd" not in str(refused.value) and "p@ss" not in str(refused.value)


def host_ports(services: dict) -> set[tuple[str, int]]:
    return {(p.get("host_ip", ""), int(p["published"])) for s in services.values() for p in s.get("ports") or []}


def test_the_override_publishes_no_port_the_standalone_stack_uses_unless_the_spec_says(tmp_path):
    release = RELEASES[-1]
    stack = Stack(tmp_path, release)
    ours = {n: s for n, s in stack.services.items() if n not in stack.cvat_services()}
    standalone = safe_load((stack.deploy / "docker-compose.yml").read_text())["services"]
    standalone_ports = {int(p.split(":")[1]) for s in standalone.values() for p in s.get("ports") or []}
    assert not {port for _, port in host_ports(ours)} & standalone_ports
    assert host_ports({"c": stack.by_alias("clickhouse")}) == set()

    published = Stack(tmp_path / "published", release, **{"cvat_stack.clickhouse_host_port": 18123})
    assert host_ports({"c": published.by_alias("clickhouse")}) == {("127.0.0.1", 18123)}


def test_the_override_says_it_needs_compose_2_24():
    text = (REPO / "deploy" / "cvat-compose.override.yml").read_text()
    header = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert "!override" in text and "Needs Docker Compose 2.24 or later" in header


# --- adopting CVAT's table (chdb) --------------------------------------------------------

def cvat_create_table(database: str) -> str:
    """CVAT's own CREATE TABLE, as its newest vendored init.py runs it, in `database`."""
    text = (FIXTURES / RELEASES[-1] / "components/analytics/clickhouse/init.py").read_text()
    ddl = re.search(r'"""\\\n(\s*CREATE TABLE IF NOT EXISTS events.*?)"""', text, re.S).group(1)
    return ddl.replace("CREATE TABLE IF NOT EXISTS events", f"CREATE TABLE IF NOT EXISTS `{database}`.events").strip().rstrip(";")


def insert_cvat_events(client, database: str, ages_days: list[int]) -> None:
    now = datetime.now(timezone.utc)
    for n, age in enumerate(ages_days):
        client.command(
            f"INSERT INTO `{database}`.events (scope, source, timestamp, user_id, payload) "
            "VALUES ({s:String}, 'server', {t:DateTime64(3)}, {u:UInt64}, '{}')",
            parameters={"s": "create:task", "t": (now - timedelta(days=age)).replace(tzinfo=None), "u": n})


def events_table(client, database: str) -> tuple[int, str]:
    count = client.query(f"SELECT count() FROM `{database}`.events").result_rows[0][0]
    ddl = client.query("SELECT create_table_query FROM system.tables WHERE database = {d:String} AND name = 'events'",
                       parameters={"d": database}).result_rows[0][0]
    return count, ddl


@pytest.fixture
def cvat_table(chdb_dsn, tmp_path):
    """A database holding CVAT's own events table with events up to three years old, as
    CVAT's volume has them, and a spec pointing at it."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    client = store_module.connect(chdb_dsn)
    client.command(f"CREATE DATABASE `{database}`")
    client.command(cvat_create_table(database))
    insert_cvat_events(client, database, [1000, 800, 400, 30, 1])
    _, path = write_spec(tmp_path, **{"clickhouse.database": database})
    yield client, database, path
    client.command(f"DROP DATABASE IF EXISTS `{database}` SYNC")


@pytest.mark.clickhouse
def test_adopting_cvats_table_keeps_every_event_and_sets_no_ttl(cvat_table):
    client, database, path = cvat_table
    spec = load_spec(path)
    assert spec["clickhouse"]["retention_days"] > 0  # the standalone retention does not apply
    migrate(client, spec, log=lambda *_: None)
    count, ddl = events_table(client, database)
    assert count == 5 and " TTL " not in ddl
    assert "request_id" in ddl  # adopted: what our queries need was added
    assert migrate(client, spec, log=lambda *_: None) == []


@pytest.mark.clickhouse
def test_a_ttl_on_the_adopted_table_is_refused_with_its_counts_until_yes(cvat_table, tmp_path):
    client, database, path = cvat_table
    migrate(client, load_spec(path), log=lambda *_: None)
    _, path = write_spec(tmp_path, **{"clickhouse.database": database, "cvat_stack.adopted_retention_days": 365})
    spec = load_spec(path)
    with pytest.raises(RetentionRefused, match=r"drops 3 events older than 365 days .*\(\d+ bytes"):
        migrate(client, spec, log=lambda *_: None)
    count, ddl = events_table(client, database)
    assert count == 5 and " TTL " not in ddl
    said = []
    migrate(client, spec, log=said.append, assume_yes=True)
    assert any("drops 3 events" in line and "--yes" in line for line in said)
    assert "toIntervalDay(365)" in events_table(client, database)[1]


@pytest.mark.clickhouse
def test_the_cli_refuses_a_ttl_that_drops_events_without_yes(tmp_path):
    dsn = f"chdb://{tmp_path / 'chdb'}"
    database = "cvat"
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    old = (now - timedelta(days=800)).strftime("%Y-%m-%d %H:%M:%S")
    _, path = write_spec(tmp_path, **{"cvat_stack.adopted_retention_days": 365})

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "cvat_analytics.cli", *args], capture_output=True,
                              text=True, timeout=300, cwd=REPO)

    # CVAT's own table on a new store, as CVAT's start-up DDL leaves it (`query` only reads
    # existing stores, so the engine is opened directly, in a process of its own).
    setup = ("import clickhouse_connect, sys\n"
             "client = clickhouse_connect.get_client(dsn=sys.argv[1])\n"
             "for statement in sys.argv[2:]: client.command(statement)")
    run = subprocess.run([sys.executable, "-c", setup, f"chdb://{tmp_path / 'chdb'}",
                          f"CREATE DATABASE {database}", cvat_create_table(database),
                          f"INSERT INTO {database}.events (scope, source, timestamp) VALUES ('create:task', 'server', '{old}')"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    run = cli("migrate", "--spec", str(path), "--dsn", dsn)
    assert run.returncode == 1 and "drops 1 events older than 365 days" in run.stderr and "--yes" in run.stderr
    run = cli("migrate", "--spec", str(path), "--dsn", dsn, "--yes")
    assert run.returncode == 0, run.stderr
