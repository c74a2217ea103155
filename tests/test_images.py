"""Every image the project builds, proven here without a Docker engine.

The rendered compose files (the standalone stack, the cluster, the override in CVAT's
stack) are read by the real Compose binary; for each service with a `build`, its
Dockerfile (inline or a file) is parsed and the build context is materialised as Docker
would send it (the context's .dockerignore applied) with exactly the paths its COPY lines
copy, where they copy them. An image that installs a Python package (`pip install`) has
its wheel built from that tree, installed into a fresh virtualenv with only the
dependencies its Dockerfile installs, and the command its container runs is run there.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cvat_analytics_generator.render import render_all, write_tree
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.validate import compose_binary

from .conftest import REPO, write_spec

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"  # as tests/test_wheel.py: dependencies as wheels, filled once
NEWEST_CVAT = sorted((REPO / "tests/fixtures/cvat").glob("v*"))[-1]
# What the migration image must not carry: the embedded engine, the ingest decoder, the
# Docker and Compose clients, the page-test browser driver.
NOT_FOR_MIGRATE = ("chdb", "msgspec", "docker", "compose", "selenium")


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


# --- the builds of the rendered compose files ---------------------------------------------

def compose_config(cwd: Path, files: list[Path], deploy: Path, home: Path) -> dict:
    required = {name for f in files for name in re.findall(r"\$\{(\w+):\?", f.read_text())}
    env = {"PATH": os.environ["PATH"], "HOME": str(home), **{name: "x" for name in required},
           "CVAT_ANALYTICS_DEPLOY": str(deploy)}
    args = [arg for f in files for arg in ("-f", str(f))]
    out = run(compose_binary() + args + ["config", "--format", "json"], cwd=cwd, env=env)
    return json.loads(out.stdout)["services"]


def builds(tmp_path: Path) -> dict[str, dict]:
    """'<compose file>:<service>' -> its `build` as Compose resolves it, for every compose
    file the project renders: the committed deploy/ (the standalone stack, and the override
    merged with CVAT's newest vendored compose file) and a cluster render."""
    deploy = REPO / "deploy"
    found = {}
    for name, services in (
            ("docker-compose.yml", compose_config(deploy, [deploy / "docker-compose.yml"], deploy, tmp_path)),
            ("cvat-compose.override.yml", compose_config(
                NEWEST_CVAT, [NEWEST_CVAT / "docker-compose.yml", deploy / "cvat-compose.override.yml"], deploy, tmp_path))):
        found.update({f"{name}:{s}": service["build"] for s, service in services.items() if "build" in service})
    _, spec_path = write_spec(tmp_path, **{"clickhouse.cluster.shards": 2, "clickhouse.cluster.replicas": 2})
    cluster = tmp_path / "cluster"
    write_tree(render_all(load_spec(spec_path)), cluster)
    services = compose_config(cluster, [cluster / "docker-compose.yml"], cluster, tmp_path)
    found.update({f"cluster/docker-compose.yml:{s}": service["build"] for s, service in services.items() if "build" in service})
    return found


def dockerfile(build: dict) -> str:
    if "dockerfile_inline" in build:
        return build["dockerfile_inline"]
    return (Path(build["context"]) / build.get("dockerfile", "Dockerfile")).read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        instruction, _, args = (pending + line).strip().partition(" ")
        out.append((instruction.upper(), args.strip()))
        pending = ""
    assert not pending, "a Dockerfile ends inside a continued line"
    return out


def copies(text: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD from the build context (not --from a stage)."""
    out = []
    for instruction, args in instructions(text):
        if instruction not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        flags = [w for w in words if w.startswith("--")]
        assert instruction == "COPY" and not any(f.startswith("--from") for f in flags), (instruction, args)
        paths = [w for w in words if not w.startswith("--")]
        out.append((paths[:-1], paths[-1]))
    return out


# --- the context as Docker sends it -------------------------------------------------------

def ignore_patterns(context: Path) -> list[tuple[bool, re.Pattern]]:
    """The context's .dockerignore as (negated, regex) in order (moby/patternmatcher rules:
    `*` stays inside one path segment, `**` crosses them, `!` lets a path back in)."""
    path = context / ".dockerignore"
    patterns = []
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, line = line.startswith("!"), line.lstrip("!").strip().strip("/")
        regex, i = "", 0
        while i < len(line):
            if line.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif line.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif line[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif line[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(line[i]), i + 1
        patterns.append((negated, re.compile(regex + r"\Z")))
    return patterns


def ignored(rel: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether Docker leaves `rel` out of the context: the last pattern that matches it or
    one of its parent folders decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    out = False
    for negated, regex in patterns:
        if any(regex.match(c) for c in candidates):
            out = not negated
    return out


def materialise(build: dict, root: Path) -> Path:
    """The files the image's COPY lines put into it, under `root` (an image's / ), taken
    from the context as Docker sends it. A COPY of something the context does not hold
    fails the build, so it fails here."""
    context = Path(build["context"])
    patterns = ignore_patterns(context)
    for sources, destination in copies(dockerfile(build)):
        target = root / destination.lstrip("/")
        for source in sources:
            path = context / source
            assert path.exists() and not ignored(source, patterns), \
                f"COPY {source}: not in the build context {context} (as .dockerignore leaves it)"
            into = target / path.name if destination.endswith("/") or len(sources) > 1 else target
            if path.is_dir():
                for file in sorted(path.rglob("*")):
                    rel = file.relative_to(context).as_posix()
                    if (file.is_file() or file.is_symlink()) and not ignored(rel, patterns):
                        copy = into / file.relative_to(path)
                        copy.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(file, copy, follow_symlinks=False)  # COPY keeps links as links
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)
    return root


# --- the tests ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def all_builds(tmp_path_factory) -> dict[str, dict]:
    return builds(tmp_path_factory.mktemp("builds"))


def python_images(all_builds: dict) -> dict[str, dict]:
    return {n: b for n, b in all_builds.items() if "pip install" in dockerfile(b)}


def test_every_image_finds_what_it_copies_in_its_context_as_docker_sends_it_and_no_secret(all_builds, tmp_path):
    # Grafana with its plugin (standalone, cluster, CVAT's stack) and the migration image.
    assert set(all_builds) == {"docker-compose.yml:grafana", "cluster/docker-compose.yml:grafana",
                               "cvat-compose.override.yml:cvat_grafana",
                               "cvat-compose.override.yml:cvat_analytics_migrate"}
    for name, build in all_builds.items():
        materialise(build, tmp_path / name.replace("/", "_").replace(":", "_"))
    # The checkout is the migration image's context: .dockerignore lets in what it copies
    # and nothing else (not the passwords in .env, the virtualenv, the data, the tests).
    [build] = python_images(all_builds).values()
    context = Path(build["context"]).resolve()
    assert context == REPO
    patterns = ignore_patterns(context)
    copied = [s for sources, _ in copies(dockerfile(build)) for s in sources]
    assert copied and not any(ignored(s, patterns) for s in copied)
    for secret_or_bulk in (".env", ".venv/bin/python", ".git/config", "data/clickhouse/x", "tests/test_images.py",
                           "cvat_analytics/__pycache__/cli.cpython-312.pyc", "build/lib/x.py",
                           "cvat_analytics.egg-info/PKG-INFO", "deploy/.env", "bench.json", ".up"):
        assert ignored(secret_or_bulk, patterns), secret_or_bulk


@pytest.mark.slow(28)  # `check`'s engine run or a subprocess per step: seconds of CPU
@pytest.mark.wheel
def test_each_python_image_builds_its_wheel_from_exactly_what_it_copies_and_runs_its_command(all_builds, tmp_path):
    images = python_images(all_builds)
    assert set(images) == {"cvat-compose.override.yml:cvat_analytics_migrate"}
    [build] = images.values()
    text = dockerfile(build)
    root = materialise(build, tmp_path / "image")
    run_lines = " && ".join(args for instruction, args in instructions(text) if instruction == "RUN")
    # The project folder `pip install` takes (a path in the image the COPYs made a folder).
    [src] = [path for path in re.findall(r"pip install [^&]*?(/[\w/.-]+)(?:\s|$)", run_lines)
             if (root / path.lstrip("/")).is_dir()]
    source = root / src.lstrip("/")
    run([*PIP, "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp_path / "dist", source])
    [wheel] = (tmp_path / "dist").glob("cvat_analytics-*.whl")

    # The package goes in without its dependencies, which come from one extra of its own.
    assert f"pip install --no-cache-dir --no-deps {src}" in run_lines
    [extra] = re.findall(r"\['optional-dependencies'\]\['(\w+)'\]", run_lines)
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    requirements = project["optional-dependencies"][extra]
    assert set(requirements) <= set(project["dependencies"]), "the image's pins differ from the package's"
    reqs = tmp_path / f"{extra}.txt"
    reqs.write_text("\n".join(requirements) + "\n")
    run([*PIP, "wheel", "--quiet", "--wheel-dir", WHEELHOUSE, "-r", reqs])
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    run([*PIP, "--python", python, "install", "--quiet", "--no-compile", "--no-index", "--find-links", WHEELHOUSE,
         "-r", reqs])
    run([*PIP, "--python", python, "install", "--quiet", "--no-compile", "--no-deps", wheel])

    env = {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path)}
    cwd = tmp_path / "empty"
    cwd.mkdir()
    for module in NOT_FOR_MIGRATE:
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, env=env, cwd=cwd)
        assert probe.returncode == 1 and "ModuleNotFoundError" in probe.stderr, module

    # The command the container runs: `cvat-analytics migrate --spec … --dsn …`.
    assert "exec cvat-analytics migrate --spec" in " ".join(migrate_entrypoint())
    cli = venv / "bin" / "cvat-analytics"
    assert "--yes" in run([cli, "migrate", "--help"], env=env, cwd=cwd).stdout
    # What migrate renders and runs: every migration, from the packaged templates.
    spec = root / "src" / "analytics.yaml"
    imported = run([python, "-c",
                    "import sys\n"
                    "from cvat_analytics import cli, migrate, store, retention\n"
                    "from cvat_analytics_generator.render import render_sql\n"
                    "from cvat_analytics_generator.spec import load_spec\n"
                    "sql = render_sql(load_spec(sys.argv[1]), migrate.FOLDER)\n"
                    "print(len(sql), sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[2:]))",
                    spec, *NOT_FOR_MIGRATE], env=env, cwd=cwd).stdout.split(None, 1)
    assert int(imported[0]) >= 15 and imported[1].strip() == "[]"
    # Up to the connection: a server that does not answer is a one-line error, not an import.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = subprocess.run([cli, "migrate", "--spec", spec, "--dsn", f"http://u:p@127.0.0.1:{port}"],
                             capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr and "No module" not in refused.stderr, refused.stderr
    assert "127.0.0.1" in refused.stderr, refused.stderr


def migrate_entrypoint() -> list[str]:
    """The migration service's entrypoint, as the committed override renders it."""
    from cvat_analytics_generator.validate import parse_yaml

    services = parse_yaml((REPO / "deploy" / "cvat-compose.override.yml").read_text())["services"]
    return services["cvat_analytics_migrate"]["entrypoint"]
