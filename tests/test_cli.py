"""The CLI's defaults as a newcomer meets them: where the spec and the store are found,
--version, init, environment settings, and make up / make down around a broken spec."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cvat_analytics_generator.spec import DEFAULT_SPEC
from cvat_analytics_generator.yaml_load import safe_load
from tests import conftest

REPO = Path(__file__).resolve().parent.parent


def cli(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CVAT_ANALYTICS_")}
    return subprocess.run([sys.executable, "-m", "cvat_analytics.cli", *map(str, args)], cwd=cwd,
                          env={**environ, **(env or {})}, capture_output=True, text=True, timeout=300)


def write_spec(directory: Path, **changes) -> Path:
    return conftest.write_spec(directory, **changes)[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_version_is_the_package_version():
    from importlib.metadata import version

    result = cli("--version", cwd=REPO)
    assert result.returncode == 0
    assert result.stdout.strip() == f"cvat-analytics {version('cvat-analytics')}"


def test_help_reads_as_prose_with_examples():
    out = cli("--help", cwd=REPO).stdout
    assert "`" not in out  # argparse prints text as is: no Markdown
    assert "examples:" in out and "cvat-analytics serve" in out.split("examples:")[1]


def test_init_writes_the_default_spec_and_never_overwrites(tmp_path):
    assert cli("init", tmp_path / "site", cwd=tmp_path).returncode == 0
    written = tmp_path / "site" / "analytics.yaml"
    assert written.read_text() == DEFAULT_SPEC.read_text()
    written.write_text(written.read_text().replace("port: 8282", "port: 9999"))
    again = cli("init", tmp_path / "site", cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr
    assert "9999" in written.read_text()


@pytest.mark.slow  # `check`'s engine run or a subprocess per step: seconds of CPU
def test_the_spec_is_flag_then_environment_then_here_then_packaged(tmp_path):
    write_spec(tmp_path, **{"vector.port": 8301})                     # ./analytics.yaml
    (tmp_path / "other").mkdir()
    other = write_spec(tmp_path / "other", **{"vector.port": 8302})
    (tmp_path / "empty").mkdir()

    def vector_port(cwd: Path, *args, env=None) -> int:
        out = tmp_path / "out"
        result = cli("render", "--out", out, *args, cwd=cwd, env=env)
        assert result.returncode == 0, result.stderr
        return safe_load((out / "vector" / "vector.yaml").read_text())["sources"]["cvat_events"]["address"]

    packaged = vector_port(tmp_path / "empty")
    assert packaged.endswith(":8282")
    assert vector_port(tmp_path).endswith(":8301")
    assert vector_port(tmp_path, env={"CVAT_ANALYTICS_SPEC": str(other)}).endswith(":8302")
    assert vector_port(tmp_path, "--spec", DEFAULT_SPEC, env={"CVAT_ANALYTICS_SPEC": str(other)}) == packaged


@pytest.mark.clickhouse
def test_without_dsn_every_command_uses_the_store_make_up_uses(tmp_path):
    write_spec(tmp_path, **{"embedded.data_dir": "site-data"})
    assert cli("migrate", cwd=tmp_path).returncode == 0
    assert (tmp_path / "site-data" / "clickhouse" / "metadata").is_dir()
    result = cli("query", "SELECT count() FROM cvat.events", "--format", "csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0"


@pytest.mark.clickhouse
def test_a_query_where_there_is_no_data_says_where_the_data_is(tmp_path):
    write_spec(tmp_path)
    result = cli("query", "SELECT 1", cwd=tmp_path)
    assert result.returncode == 1
    assert f"no ClickHouse data at {tmp_path / 'data' / 'clickhouse'}" in result.stderr
    assert "make up" in result.stderr
    assert not (tmp_path / "data").exists()  # nothing created by asking


@pytest.mark.clickhouse
def test_the_dsn_comes_from_the_environment_when_no_flag_gives_it(tmp_path):
    write_spec(tmp_path)
    store = tmp_path / "elsewhere"
    env = {"CVAT_ANALYTICS_DSN": f"chdb://{store}"}
    assert cli("migrate", cwd=tmp_path, env=env).returncode == 0
    assert (store / "metadata").is_dir() and not (tmp_path / "data").exists()


def test_a_bad_port_in_the_environment_is_one_line(tmp_path):
    write_spec(tmp_path)
    result = cli("serve", cwd=tmp_path, env={"CVAT_ANALYTICS_PORT": "eighty"})
    assert result.returncode == 1
    assert result.stderr.strip() == "cvat-analytics: $CVAT_ANALYTICS_PORT: expected a port number, got 'eighty'"


@pytest.mark.slow
@pytest.mark.clickhouse
def test_make_up_and_down_on_the_embedded_default_with_a_spec_broken_in_between(tmp_path):
    """up starts serve on the spec's port; a typo in the spec is then one line from up
    and never keeps down from stopping the service."""
    port = free_port()
    spec = write_spec(tmp_path, **{"embedded.port": port, "embedded.data_dir": str(tmp_path / "data")})
    env = {**os.environ, "SPEC": str(spec), "UP_STATE": str(tmp_path / ".up"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("DOCKER_HOST", None)
    up = subprocess.run(["scripts/up.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    state = dict(line.split("=", 1) for line in (tmp_path / ".up").read_text().splitlines())
    assert state["mode"] == "embedded" and state["ingest"] == f"http://127.0.0.1:{port}/"
    pid = int(state["pid"])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            assert r.status == 200
        spec.write_text(spec.read_text().replace("retention_days: 365", "retention_days: ninety"))
        again = subprocess.run(["scripts/up.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 2
        assert "Traceback" not in again.stderr
        assert "clickhouse.retention_days: expected whole days" in again.stderr
        down = subprocess.run(["scripts/down.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stderr
        assert f"stopped the embedded service (pid {pid})" in down.stdout
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.1)
        assert not _alive(pid)
        assert not (tmp_path / ".up").exists()
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def readme_quick_start() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Quick start", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.clickhouse
def test_the_readme_quick_start_works_as_written_on_another_port(tmp_path):
    """Each line of the README's quick start, run as written (only the port in the curl
    lines follows the spec, as the README says), on a fresh data directory."""
    port = free_port()
    spec = write_spec(tmp_path, **{"embedded.port": port, "embedded.data_dir": str(tmp_path / "data")})
    env = {**os.environ, "CVAT_ANALYTICS_SPEC": str(spec), "UP_STATE": str(tmp_path / ".up"),
           "ENV_FILE": str(tmp_path / ".env")}
    lines = readme_quick_start()
    assert lines[0] == "make up" and "make down" in lines
    outputs = []
    try:
        for line in lines:
            command = line.replace("127.0.0.1:8282", f"127.0.0.1:{port}")
            result = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True,
                                    text=True, timeout=300)
            assert result.returncode == 0, f"{line!r} failed:\n{result.stdout}\n{result.stderr}"
            outputs.append(result.stdout)
    finally:
        subprocess.run(["scripts/down.sh"], cwd=REPO, env=env, capture_output=True, timeout=60)
    health = next(out for line, out in zip(lines, outputs) if "/health" in line)
    assert '"status": "ok"' in health
    posted = next(out for line, out in zip(lines, outputs) if "--data" in line)
    assert '"stored": 1' in posted
    hours = outputs[-1].splitlines()
    assert hours[0].startswith("user_id") and len(hours) > 2  # the demo's annotators
    secrets = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines())
    readme = (REPO / "README.md").read_text()
    assert secrets and all(len(value) >= 24 and f"`{name}`" in readme for name, value in secrets.items())
