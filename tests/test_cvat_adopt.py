"""`cvat-analytics adopt` on a CVAT checkout laid out like CVAT's, and `check --cvat`.

A checkout is a vendored release's files (tests/fixtures/cvat/<release>/, CVAT's own compose
file) copied into tmp_path with a `.env` and a user's `docker-compose.override.yml` (CVAT's
install guide puts shared storage there). After adopt, a plain `docker compose config` in
that folder (no -f, no variables but PATH and HOME: what `docker compose up -d` reads) must
hold our services and the user's file, with Vector listening where that release's backends
send. CVAT's upgrade (2.43 -> 2.44: the port moves from 80 to 8282) is replayed: check fails
until adopt runs again. The backup before the first adoption is decided on chdb.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from cvat_analytics import cvat_checkout
from cvat_analytics.cli import main
from cvat_analytics.cvat_backup import backup_name, backup_once
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.validate import compose_binary
from cvat_analytics_generator.yaml_load import safe_load

from .conftest import write_spec
from .test_cvat_stack import cvat_create_table

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cvat"
OURS = "cvat-analytics/deploy/cvat-compose.override.yml"
USERS_OVERRIDE = """\
services:
  cvat_server:
    volumes:
      - cvat_share:/home/django/share:ro
volumes:
  cvat_share:
    driver_opts: {type: none, device: /mnt/share, o: bind}
"""
# A user's .env: comments, blank lines, export, quotes, a trailing space, CRLF-free.
USERS_ENV = '# my CVAT\nCVAT_HOST=cvat.example.org\n\nexport ACME_EMAIL="admin@example.org" \nCVAT_ALLOW_STATIC_CACHE=yes # faster\n'


def make_checkout(root: Path, release: str, env: str | None = USERS_ENV, users_override: bool = True) -> Path:
    """A CVAT checkout of `release`: its files as released, a .env and a user's override."""
    if root.exists():  # an upgrade: CVAT's files replaced, the user's own kept
        for name in ("docker-compose.yml", "components", "cvat"):
            shutil.rmtree(root / name, ignore_errors=True) if (root / name).is_dir() else (root / name).unlink(missing_ok=True)
        shutil.copytree(FIXTURES / release, root, dirs_exist_ok=True)
        return root
    shutil.copytree(FIXTURES / release, root)
    if env is not None:
        (root / ".env").write_text(env)
    if users_override:
        (root / "docker-compose.override.yml").write_text(USERS_OVERRIDE)
    return root


@pytest.fixture
def spec_path(tmp_path) -> Path:
    (tmp_path / "spec").mkdir()
    return write_spec(tmp_path / "spec")[1]


def adopt(cvat: Path, spec_path: Path, *extra: str) -> int:
    return main(["adopt", str(cvat), "--spec", str(spec_path), *extra])


def plain_compose_config(cvat: Path, home: Path) -> dict:
    """What a plain `docker compose up -d` in the checkout loads: no -f, no variables."""
    run = subprocess.run(compose_binary() + ["config", "--format", "json"], capture_output=True, text=True,
                         cwd=cvat, timeout=120, env={"PATH": os.environ["PATH"], "HOME": str(home)})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def vector_ports(config: dict) -> set[int]:
    vector = config["services"]["cvat_vector"]
    [mount] = [v for v in vector["volumes"] if v["target"] == "/etc/vector/vector.yaml"]
    sources = safe_load(Path(mount["source"]).read_text())["sources"].values()
    return {int(s["address"].rsplit(":", 1)[1]) for s in sources if s["type"] == "http_server"}


def test_adopt_lists_cvats_files_and_ours_in_its_env_and_a_plain_compose_config_loads_both(tmp_path, spec_path, capsys):
    cvat = make_checkout(tmp_path / "cvat", "v2.73.0")
    assert adopt(cvat, spec_path) == 0
    said = capsys.readouterr().out
    env = (cvat / ".env").read_text()
    # The user's lines byte for byte, ours after them.
    assert env.startswith(USERS_ENV)
    values = cvat_checkout.parse_env(env)
    assert values["COMPOSE_FILE"] == f"docker-compose.yml:docker-compose.override.yml:{OURS}"
    assert values["CVAT_ANALYTICS_DEPLOY"] == str((cvat / "cvat-analytics" / "deploy").resolve())
    assert Path(values["CVAT_ANALYTICS_SOURCE"], "pyproject.toml").is_file()
    for name in cvat_checkout.PASSWORDS:  # absent before: a random value each, never printed
        assert len(values[name]) >= 32 and values[name] not in said and name in said
    assert len({values[n] for n in cvat_checkout.PASSWORDS}) == len(cvat_checkout.PASSWORDS)
    assert "COMPOSE_FILE" in said and "2.73.0" in said

    config = plain_compose_config(cvat, tmp_path)
    services = config["services"]
    assert {"cvat_analytics_migrate", "cvat_analytics_vector_volumes"} <= set(services)  # ours
    spec = load_spec(spec_path)
    assert services["cvat_clickhouse"]["image"] == f"{spec['clickhouse']['image']}:{spec['clickhouse']['version']}"
    assert services["cvat_server"]["environment"]["CLICKHOUSE_USER"] == spec["clickhouse"]["users"]["cvat_server"]
    assert services["cvat_server"]["environment"]["CLICKHOUSE_PASSWORD"] == values["CLICKHOUSE_CVAT_SERVER_PASSWORD"]
    # The user's own override is still there (shared storage on cvat_server).
    assert "/home/django/share" in [v["target"] for v in services["cvat_server"]["volumes"]]
    assert "cvat_share" in config["volumes"]
    # CVAT's own services stay CVAT's, and Vector listens where 2.73's backends send.
    assert services["cvat_server"]["image"] == "cvat/server:v2.73.0"
    assert services["cvat_server"]["environment"]["DJANGO_LOG_SERVER_PORT"] == "8282"
    assert vector_ports(config) == {8282}
    # The spec the migration service reads is the one rendered from, for this release.
    [mount] = [v for v in services["cvat_analytics_migrate"]["volumes"] if v["target"] == "/etc/cvat-analytics/analytics.yaml"]
    assert load_spec(mount["source"])["cvat_stack"]["cvat_version"] == "2.73.0"
    assert Path(services["cvat_analytics_migrate"]["build"]["context"], "pyproject.toml").is_file()


def test_adopt_run_twice_changes_nothing_the_second_time(tmp_path, spec_path, capsys):
    cvat = make_checkout(tmp_path / "cvat", "v2.64.0")
    assert adopt(cvat, spec_path) == 0
    first = (cvat / ".env").read_bytes()
    capsys.readouterr()
    assert adopt(cvat, spec_path) == 0
    assert (cvat / ".env").read_bytes() == first
    assert f"{cvat / '.env'}: unchanged" in capsys.readouterr().out
    values = cvat_checkout.parse_env(first.decode())
    assert values["COMPOSE_FILE"].split(":").count(OURS) == 1


def test_adopt_keeps_a_compose_file_list_with_its_separator_and_replaces_only_its_lines(tmp_path, spec_path):
    cvat = make_checkout(tmp_path / "cvat", "v2.66.0", env=None)
    (cvat / "docker-compose.https.yml").write_text("services:\n  traefik:\n    environment:\n      ACME_EMAIL: a@b.c\n")
    env = ("CVAT_HOST=cvat.example.org\r\nCOMPOSE_PATH_SEPARATOR=;\r\n"
           "COMPOSE_FILE=docker-compose.yml;docker-compose.https.yml;docker-compose.override.yml\r\n"
           "CLICKHOUSE_ADMIN_PASSWORD=kept-as-it-is\r\nTAIL=1")
    (cvat / ".env").write_bytes(env.encode())
    assert adopt(cvat, spec_path) == 0
    text = (cvat / ".env").read_bytes().decode()
    ours = OURS.replace("/", os.sep)
    assert text.startswith("CVAT_HOST=cvat.example.org\r\nCOMPOSE_PATH_SEPARATOR=;\r\n"
                           f"COMPOSE_FILE=docker-compose.yml;docker-compose.https.yml;docker-compose.override.yml;{ours}\r\n"
                           "CLICKHOUSE_ADMIN_PASSWORD=kept-as-it-is\r\nTAIL=1\r\n")
    assert "\n" not in text.replace("\r\n", "")  # CRLF kept for every line added
    config = plain_compose_config(cvat, tmp_path)
    assert config["services"]["traefik"]["environment"]["ACME_EMAIL"] == "a@b.c"
    assert config["services"]["cvat_clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"] == "kept-as-it-is"
    assert "cvat_analytics_migrate" in config["services"]


def test_a_users_override_written_after_adopting_fails_check_until_adopt_lists_it(tmp_path, spec_path):
    cvat = make_checkout(tmp_path / "cvat", "v2.66.0", users_override=False)
    assert adopt(cvat, spec_path) == 0
    assert cvat_checkout.checkout_problems(cvat) == []
    # Later, shared storage as CVAT's install guide says: Compose ignores the file while
    # COMPOSE_FILE is set.
    (cvat / "docker-compose.override.yml").write_text(USERS_OVERRIDE)
    [problem] = cvat_checkout.checkout_problems(cvat)
    assert f"COMPOSE_FILE does not list {(cvat / 'docker-compose.override.yml').resolve()}" in problem
    assert adopt(cvat, spec_path) == 0
    assert cvat_checkout.parse_env((cvat / ".env").read_text())["COMPOSE_FILE"] == \
        f"docker-compose.yml:docker-compose.override.yml:{OURS}"
    assert cvat_checkout.checkout_problems(cvat) == []
    config = plain_compose_config(cvat, tmp_path)
    assert "/home/django/share" in [v["target"] for v in config["services"]["cvat_server"]["volumes"]]


def test_adopt_into_a_folder_the_user_names(tmp_path, spec_path):
    cvat = make_checkout(tmp_path / "cvat", "v2.45.0")
    elsewhere = tmp_path / "analytics for cvat"  # a space: quoted in .env
    assert adopt(cvat, spec_path, "--out", str(elsewhere)) == 0
    values = cvat_checkout.parse_env((cvat / ".env").read_text())
    assert values["COMPOSE_FILE"].split(":")[-1] == str((elsewhere / "deploy" / "cvat-compose.override.yml").resolve())
    assert "CVAT_ANALYTICS_DEPLOY='" in (cvat / ".env").read_text()
    config = plain_compose_config(cvat, tmp_path)
    assert "cvat_analytics_migrate" in config["services"]
    assert not (cvat / "cvat-analytics").exists()


def test_upgrading_cvat_fails_check_until_adopt_renders_for_the_new_release(tmp_path, spec_path, capsys):
    cvat = make_checkout(tmp_path / "cvat", "v2.43.0")
    assert adopt(cvat, spec_path) == 0
    assert cvat_checkout.checkout_problems(cvat) == []
    assert vector_ports(plain_compose_config(cvat, tmp_path)) == {80}

    make_checkout(cvat, "v2.44.0")  # CVAT's upgrade guide: down, replace the sources, up
    problems = cvat_checkout.checkout_problems(cvat)
    assert len(problems) == 1 and "rendered for CVAT 2.43.0, but the checkout is CVAT 2.44.0" in problems[0]
    assert f"cvat-analytics adopt {cvat}" in problems[0]
    config = plain_compose_config(cvat, tmp_path)  # what `up` would start now: the stale render
    assert config["services"]["cvat_server"]["environment"]["DJANGO_LOG_SERVER_PORT"] == "8282"
    assert vector_ports(config) == {80}

    capsys.readouterr()
    assert adopt(cvat, spec_path) == 0
    assert "rendered the override for CVAT 2.44.0" in (said := capsys.readouterr().out) and "(was 2.43.0)" in said
    assert cvat_checkout.checkout_problems(cvat) == []
    config = plain_compose_config(cvat, tmp_path)
    assert vector_ports(config) == {8282}
    assert "/home/django/share" in [v["target"] for v in config["services"]["cvat_server"]["volumes"]]


@pytest.mark.slow  # `check`'s engine run or a subprocess per step: seconds of CPU
def test_check_fails_when_compose_file_no_longer_lists_ours(tmp_path, spec_path, capsys):
    cvat = make_checkout(tmp_path / "cvat", "v2.48.0")
    assert adopt(cvat, spec_path) == 0
    check = ["check", "--spec", str(cvat / "cvat-analytics" / "analytics.yaml"),
             "--out", str(cvat / "cvat-analytics" / "deploy"), "--cvat", str(cvat)]
    capsys.readouterr()
    assert main(check) == 0, capsys.readouterr().err
    assert "starts with the override rendered for its release" in capsys.readouterr().out

    env = (cvat / ".env").read_text()
    (cvat / ".env").write_text(env.replace(f":{OURS}", ""))  # e.g. a .env copied over from CVAT's docs
    [problem] = cvat_checkout.checkout_problems(cvat)
    assert problem.startswith(f"{cvat / '.env'}: COMPOSE_FILE does not list ") and "cvat-compose.override.yml" in problem
    # Through the command: its exit code and the line, beside the usual check of --out.
    assert main(check) == 1
    assert problem in capsys.readouterr().err


# --- refusals: a clear line naming the file and what was expected; nothing written -------------

def _refused(cvat: Path, spec_path: Path, capsys) -> str:
    before = {p: p.read_bytes() for p in cvat.rglob("*") if p.is_file()} if cvat.is_dir() else {}
    capsys.readouterr()
    assert adopt(cvat, spec_path) == 1
    after = {p: p.read_bytes() for p in cvat.rglob("*") if p.is_file()} if cvat.is_dir() else {}
    assert after == before  # nothing half-written
    err = capsys.readouterr().err.strip()
    assert err.startswith("cvat-analytics: not adopted: ") and "\n" not in err
    return err


def test_refuses_a_release_it_does_not_know_listing_the_known_ones(tmp_path, spec_path, capsys):
    cvat = make_checkout(tmp_path / "cvat", "v2.73.0")
    compose = cvat / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("v2.73.0", "v2.74.0"))
    err = _refused(cvat, spec_path, capsys)
    assert f"{compose}: CVAT 2.74.0 is not a release cvat-analytics knows; known: 2.22.x to 2.73.x" in err


def test_refuses_a_folder_that_is_not_a_cvat_checkout(tmp_path, spec_path, capsys):
    (tmp_path / "empty").mkdir()
    assert f"{tmp_path / 'empty' / 'docker-compose.yml'}: missing; expected CVAT's compose file" in \
        _refused(tmp_path / "empty", spec_path, capsys)
    assert "expected a CVAT checkout" in _refused(tmp_path / "nowhere", spec_path, capsys)


def test_refuses_a_compose_file_without_cvats_release_tag(tmp_path, spec_path, capsys):
    cvat = make_checkout(tmp_path / "cvat", "v2.73.0")
    compose = cvat / "docker-compose.yml"
    original = compose.read_text()
    compose.write_text(original.replace("${CVAT_VERSION:-v2.73.0}", "latest"))
    assert "expected CVAT's images tagged cvat/server:${CVAT_VERSION:-vX.Y.Z} with one release, found none" in \
        _refused(cvat, spec_path, capsys)
    compose.write_text(original.replace("${CVAT_VERSION:-v2.73.0}", "${CVAT_VERSION:-dev}"))  # CVAT's develop
    assert f"{compose}: CVAT dev is not a release cvat-analytics knows" in _refused(cvat, spec_path, capsys)


def test_refuses_images_of_another_release_than_the_checkout(tmp_path, spec_path, capsys):
    cvat = make_checkout(tmp_path / "cvat", "v2.44.0", env="CVAT_VERSION=v2.45.0\n")
    assert (f"{cvat / '.env'}: CVAT_VERSION runs CVAT 2.45.0's images with 2.44.0's docker-compose.yml"
            in _refused(cvat, spec_path, capsys))


def test_refuses_a_checkout_whose_version_file_disagrees(tmp_path, spec_path, capsys):
    cvat = make_checkout(tmp_path / "cvat", "v2.44.0")
    (cvat / "cvat" / "__init__.py").write_text("VERSION = (2, 45, 0, 'alpha', 0)\n")
    assert f"{cvat / 'cvat' / '__init__.py'}: VERSION is 2.45.0 (alpha)" in _refused(cvat, spec_path, capsys)
    (cvat / "cvat" / "__init__.py").write_text("VERSION = (2, 44, 0, 'final', 0)\n")
    assert adopt(cvat, spec_path) == 0


def test_refuses_a_compose_file_list_naming_a_missing_file(tmp_path, spec_path, capsys):
    cvat = make_checkout(tmp_path / "cvat", "v2.73.0", env="COMPOSE_FILE=docker-compose.yml:docker-compose.gone.yml\n")
    assert (f"{cvat / '.env'}: COMPOSE_FILE names docker-compose.gone.yml, which does not exist"
            in _refused(cvat, spec_path, capsys))


def test_refuses_to_render_over_a_folder_it_did_not_write(tmp_path, spec_path, capsys):
    cvat = make_checkout(tmp_path / "cvat", "v2.73.0")
    project = tmp_path / "project"  # e.g. --out naming the cvat-analytics checkout itself
    project.mkdir()
    (project / "analytics.yaml").write_text("# my spec, with comments\n")
    capsys.readouterr()
    assert adopt(cvat, spec_path, "--out", str(project)) == 1
    assert f"{project / 'analytics.yaml'}: exists and was not written by adopt" in capsys.readouterr().err
    assert (project / "analytics.yaml").read_text() == "# my spec, with comments\n"
    assert not (project / "deploy").exists() and (cvat / ".env").read_text() == USERS_ENV
    (project / "analytics.yaml").unlink()
    (project / "deploy").mkdir()  # someone else's deploy tree, without adopt's spec beside it
    assert adopt(cvat, spec_path, "--out", str(project)) == 1
    assert f"{project / 'deploy'}: exists and was not written by adopt" in capsys.readouterr().err


def test_refuses_an_env_that_is_not_text(tmp_path, spec_path, capsys):
    cvat = make_checkout(tmp_path / "cvat", "v2.73.0", env=None)
    (cvat / ".env").write_bytes(b"CVAT_HOST=\xff\n")
    assert f"{cvat / '.env'}: expected UTF-8 text" in _refused(cvat, spec_path, capsys)


# --- the backup before the first adoption ------------------------------------------------------

def test_the_override_backs_up_cvats_database_to_its_own_volume_before_migrating(tmp_path, spec_path):
    cvat = make_checkout(tmp_path / "cvat", "v2.73.0")
    assert adopt(cvat, spec_path) == 0
    services = plain_compose_config(cvat, tmp_path)["services"]
    clickhouse, migrator = services["cvat_clickhouse"], services["cvat_analytics_migrate"]
    backups = {v["target"]: v for v in clickhouse["volumes"]}
    assert backups["/backups"]["source"] == "cvat_analytics_backups" and backups["/backups"]["type"] == "volume"
    config = Path(backups["/etc/clickhouse-server/config.d/cvat-backups.xml"]["source"]).read_text()
    assert "<path>/backups/</path>" in config and "<allowed_disk>backups</allowed_disk>" in config
    [seen] = [v for v in migrator["volumes"] if v["source"] == "cvat_analytics_backups"]
    assert seen["target"] == "/backups" and seen["read_only"] is True
    script = migrator["entrypoint"][-2]
    # The backup step runs first, and a failed one stops the service before migrate.
    assert script.index("python -m cvat_analytics.cvat_backup") < script.index("exec cvat-analytics migrate")
    assert "--volume /backups || exit 1" in script


@pytest.mark.clickhouse
def test_the_backup_is_taken_only_before_the_first_adoption(chdb_dsn, tmp_path):
    from cvat_analytics import store as store_module
    from cvat_analytics.migrate import migrate

    database = f"t_{uuid.uuid4().hex[:12]}"
    _, path = write_spec(tmp_path, **{"clickhouse.database": database})
    spec = load_spec(path)
    client = store_module.connect(chdb_dsn)
    volume = tmp_path / "backups"
    volume.mkdir()
    said = []
    try:
        assert backup_once(client, spec, volume, log=said.append) == "new"  # no CVAT table: a new CVAT
        client.command(f"CREATE DATABASE {database}")
        client.command(cvat_create_table(database))  # CVAT's own DDL (its init.py)
        # CVAT's table, not adopted: the backup is due; chdb has no disk `backups`, so the
        # BACKUP fails, and that failure stops the step (nothing would be adopted).
        with pytest.raises(Exception, match="backups"):
            backup_once(client, spec, volume, log=said.append, poll_s=0.01)
        (volume / backup_name(spec)).mkdir()
        (volume / backup_name(spec) / ".backup").write_text("<config/>")
        assert backup_once(client, spec, volume, log=said.append) == "kept"  # once, not at every start
        (volume / backup_name(spec) / ".backup").unlink()
        migrate(client, spec, log=lambda *_: None)
        assert backup_once(client, spec, volume, log=said.append) == "adopted"
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    assert any(f"backing up {database}" in line for line in said)


@pytest.mark.parametrize("breaker", ["\r", "\x0c", "\x85", "\u2028"])
def test_a_value_holding_a_character_python_ends_lines_at_is_read_as_compose_reads_it(tmp_path, spec_path, breaker):
    """Compose ends a .env line at \\n only; str.splitlines also at \\r, \\f, \\x85, \\u2028. A value
    holding one before `COMPOSE_FILE=...` made adopt replace that "line" and report success
    while Compose read it as the value before it, and started CVAT without our services."""
    cvat = make_checkout(tmp_path / "cvat", "v2.66.0", env=None)
    (cvat / ".env").write_bytes(f"NOTE=hello{breaker}COMPOSE_FILE=docker-compose.yml\n".encode())
    assert adopt(cvat, spec_path) == 0
    config = plain_compose_config(cvat, tmp_path)
    assert "cvat_analytics_migrate" in config["services"]
    assert (cvat / ".env").read_bytes().startswith(f"NOTE=hello{breaker}COMPOSE_FILE=docker-compose.yml\n".encode())
