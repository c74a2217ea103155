"""The wheel, installed as a platform team would: built with `pip wheel`, installed with
pip into a virtualenv outside the repository, run from an empty directory.

The virtualenv is made once per dependency list and kept outside the repository, in
~/.cache/cvat-analytics/wheel-test-<hash of the list>: the first run installs the wheel with
its dependencies from PyPI (or pip's cache), later runs (other clones too) replace only
cvat-analytics in it, so they skip ~600 MB of unpacking. It holds exactly what the wheel
declares (another dependency list is another virtualenv) and nothing of the repository's own;
a lock lets one test run at a time use it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_serve import cvat_batch

pytestmark = [pytest.mark.clickhouse, pytest.mark.wheel, pytest.mark.slow]

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cvat-analytics"


@contextmanager
def virtualenv_with(wheel: Path):
    """The virtualenv of this dependency list with `wheel` installed in it, locked while in use:
    made (the dependencies installed) the first time, only cvat-analytics replaced after."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    key = hashlib.sha256(json.dumps([sys.base_prefix, sys.version, dependencies]).encode()).hexdigest()[:16]
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "wheel-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        venv = CACHE / f"wheel-test-{key}"
        # No bytecode compiled ahead: a third of the install's time.
        install = [*PIP, "--python", venv / "bin" / "python", "install", "--quiet", "--no-compile"]
        if (venv / ".complete").exists():
            run([*install, "--no-deps", "--force-reinstall", wheel])
        else:
            for old in CACHE.glob("wheel-test-*/"):
                shutil.rmtree(old)  # another dependency list's, or one an interrupted run left
            run([sys.executable, "-m", "venv", "--without-pip", venv])  # no pip inside: this pip installs
            run([*install, wheel])
            (venv / ".complete").touch()
        yield venv


def source_tree(target: Path) -> Path:
    """The repository's files as git sees them (tracked, and new ones not ignored), copied:
    a build in the checkout itself would pick up whatever an old build left in build/."""
    listed = run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree, not yet in git
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The freshly built wheel in its virtualenv: its bin directory and a clean environment."""
    work = tmp_path_factory.mktemp("wheel")
    source = source_tree(work / "source")
    run([*PIP, "wheel", "--quiet", "--no-deps", "--wheel-dir", work / "dist", source])
    [wheel] = (work / "dist").glob("cvat_analytics-*.whl")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CVAT_ANALYTICS_", "PYTHON", "VIRTUAL_ENV"))}
    empty = work / "empty"
    empty.mkdir()
    with virtualenv_with(wheel) as venv:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        yield {"bin": venv / "bin", "env": env, "cwd": empty}


def cli(installed: dict, *args) -> subprocess.CompletedProcess:
    return run([installed["bin"] / "cvat-analytics", *args], env=installed["env"], cwd=installed["cwd"])


def get(url: str, data: bytes | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_the_installed_wheel_runs_every_command_from_an_empty_directory(installed):
    where = run([installed["bin"] / "python", "-c", "import cvat_analytics; print(cvat_analytics.__file__)"],
                env=installed["env"], cwd=installed["cwd"]).stdout
    assert where.startswith(str(installed["bin"].parent)) and str(REPO) not in where

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert cli(installed, "--version").stdout.strip() == f"cvat-analytics {version}"
    cli(installed, "init")
    assert (installed["cwd"] / "analytics.yaml").read_bytes() == (REPO / "analytics.yaml").read_bytes()
    cli(installed, "render", "--out", "deploy")
    rendered = {p.relative_to(installed["cwd"] / "deploy") for p in (installed["cwd"] / "deploy").rglob("*")
                if p.is_file()}
    assert rendered == {p.relative_to(REPO / "deploy") for p in (REPO / "deploy").rglob("*") if p.is_file()}
    cli(installed, "migrate")

    log_path = installed["cwd"] / "serve.log"
    with open(log_path, "w") as log:
        serve = subprocess.Popen([installed["bin"] / "cvat-analytics", "serve", "--port", "0", "--log-format", "json"],
                                 env=installed["env"], cwd=installed["cwd"], stdout=log, stderr=log)
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline and serve.poll() is None:
            found = re.search(r"serving (http://\S+)", log_path.read_text())
            url = found.group(1) if found else time.sleep(0.1)
        assert url, log_path.read_text()

        # Server events, and an annotator's clicks 10 s apart (working time for the UDF below).
        events = cvat_batch("wheel", 5)
        events[2:] = [{**event, "scope": "click:element", "source": "client", "timestamp": f"{base + 10 * i}"}
                      for i, event in enumerate(events[2:]) for base in [int(float(events[0]["timestamp"]))]]
        status, body, _ = get(url + "/", json.dumps(events).encode())
        assert (status, json.loads(body)) == (200, {"stored": 5})

        status, page, _ = get(url + "/dashboards")
        assert status == 200, page[:500]
        uid = re.search(rb'href="/dashboards/([A-Za-z0-9_-]+)', page).group(1).decode()
        status, page, headers = get(f"{url}/dashboards/{uid}")
        assert status == 200 and headers["Content-Type"].startswith("text/html") and b"<svg" in page

        status, metrics, _ = get(url + "/metrics")
        assert status == 200 and b"cvat_analytics_engine_up 1.0" in metrics
        assert b"cvat_analytics_events_accepted_total 5.0" in metrics

        status, body, _ = get(url + "/api/events/export?from=2000-01-01", b"")
        assert status == 202
        rq_id = json.loads(body)["rq_id"]
        while json.loads(get(f"{url}/api/requests/{rq_id}")[1])["status"] != "finished":
            assert time.monotonic() < deadline + 60
            time.sleep(0.1)
        status, csv_text, _ = get(f"{url}/api/events/download?rq_id={rq_id}")
        assert status == 200 and len(csv_text.decode().splitlines()) == 1 + 5  # client events are exported too
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=120)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert serve.returncode == 0 and lines[-1]["message"] == "stopped"
    assert {line["path"] for line in lines if line["logger"] == "cvat_analytics.access"} >= {"/", "/metrics"}

    # The executable UDF shipped too: the working-time engine that runs it answers.
    totals = cli(installed, "working-time", "--engine", "udf", "--by", "user")
    assert totals.stdout.splitlines()[0].startswith("user"), (totals.stdout, totals.stderr)
