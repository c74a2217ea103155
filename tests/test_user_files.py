"""Files a user gives the project (the spec, custom dashboard definitions, a dashboard to
import) are read one way (generator/user_file.py): a YAML alias bomb, a key given twice, a
device, a FIFO, a link out of the dashboards folder or an oversized file is refused at once,
naming the file (and line). Whatever could hang or eat memory runs in a child process with a
time and memory bound, so a regression fails the test instead of the machine."""
from __future__ import annotations

import os
import resource
import subprocess
import time

import pytest

from cvat_analytics_generator import grafana, user_file
from cvat_analytics_generator.spec import DEFAULT_SPEC, SpecError, load_spec
from tests.conftest import REPO
from tests.test_dashboards_custom import ERRORS_BY_USER, custom_spec

CLI = REPO / ".venv" / "bin" / "cvat-analytics"
MEMORY_BOUND = 1536 * 1024 * 1024
TIME_BOUND_S = 40


def bounded_cli(*args, cwd):
    """The CLI in a child limited to MEMORY_BOUND of address space and TIME_BOUND_S seconds:
    (completed process, seconds), or a failure naming the bound it ran into."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BOUND, MEMORY_BOUND))

    start = time.monotonic()
    try:
        run = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                             timeout=TIME_BOUND_S, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {TIME_BOUND_S} s: {args}")
    return run, time.monotonic() - start


def bomb(levels: int = 9) -> str:
    """A flow sequence of 9**levels strings in a few hundred bytes ("billion laughs")."""
    rows = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(rows) + "]"


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_an_alias_bomb_in_the_spec_is_refused_at_once(tmp_path):
    """On main: a type error's message holds the value's repr, which grows past any memory."""
    text = DEFAULT_SPEC.read_text().replace("bind_address: 127.0.0.1", "bind_address: " + bomb())
    assert "lol" in text
    (tmp_path / "analytics.yaml").write_text(text)
    run, seconds = bounded_cli("render", "--spec", tmp_path / "analytics.yaml", "--out", tmp_path / "out", cwd=tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"analytics.yaml:{line_of(text, 'bind_address:')}: refused: an alias (*a0)" in run.stderr
    assert seconds < 10 and not (tmp_path / "out").exists()


def test_an_alias_bomb_in_a_custom_dashboard_is_refused_at_once(tmp_path):
    """On main: the totals are copied into Grafana's JSON, written out 9**9 times over."""
    text = ERRORS_BY_USER.replace("    type: table\n", f"    type: table\n    totals: {bomb()}\n")
    path = custom_spec(tmp_path, errors_by_user=text)
    run, seconds = bounded_cli("render", "--spec", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert run.returncode == 1, run.stderr[-2000:]
    assert f"errors_by_user.yaml:{line_of(text, 'totals:')}: refused: an alias (*a0)" in run.stderr
    assert seconds < 10 and not (tmp_path / "out").exists()


def test_a_key_given_twice_in_the_spec_is_refused_naming_both_lines(tmp_path):
    """The issue's case: a second access block would replace every token with its own."""
    text = DEFAULT_SPEC.read_text() + (
        "\naccess:\n  tokens:\n    - {name: all, secret_env: ALL, permissions: [ingest, export, dashboards, metrics, sql]}\n")
    (tmp_path / "analytics.yaml").write_text(text)
    first, second = (i for i, line in enumerate(text.splitlines(), 1) if line.startswith("access:"))
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "analytics.yaml")
    assert str(err.value) == (f"{tmp_path / 'analytics.yaml'}:{second}: key 'access' is given twice, "
                              f"at lines {first} and {second}: keep one")


def test_a_key_given_twice_in_a_custom_dashboard_is_refused_naming_both_lines(tmp_path):
    text = ERRORS_BY_USER.replace("    type: table\n", "    type: table\n    title: Again\n")
    spec = load_spec(custom_spec(tmp_path, errors_by_user=text))
    lines = [i for i, line in enumerate(text.splitlines(), 1) if line.strip().startswith("title: ")][1:]
    with pytest.raises(grafana.DefinitionError,
                       match=rf"errors_by_user\.yaml:{lines[1]}: key 'title' is given twice, at lines {lines[0]} and {lines[1]}"):
        grafana.load_all(spec)


def test_the_shipped_spec_and_definitions_use_no_alias_and_no_key_twice():
    for path in [DEFAULT_SPEC, *sorted(grafana.DEFINITIONS.glob("*.yaml"))]:
        assert user_file.read_yaml(path)[0], path


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "outside", "folder", "loop"])
def test_a_definition_that_is_not_a_regular_file_in_the_folder_is_refused(tmp_path, kind):
    """On main /dev/zero is read until memory runs out, a FIFO waits for a writer for ever,
    and a link to a file outside the folder is read as a definition."""
    path = custom_spec(tmp_path)
    entry = tmp_path / "mine" / "x.yaml"
    if kind == "/dev/zero":
        entry.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(entry)
    elif kind == "outside":
        (tmp_path / "elsewhere.yaml").write_text(ERRORS_BY_USER)
        entry.symlink_to(tmp_path / "elsewhere.yaml")
    elif kind == "loop":  # main refused it too; kept so the reader's own link check stays a line, not a traceback
        entry.symlink_to("y.yaml")
        entry.with_name("y.yaml").symlink_to("x.yaml")
    else:
        entry.mkdir()
    run, seconds = bounded_cli("render", "--spec", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert run.returncode == 1, run.stderr[-2000:]
    expected = {"/dev/zero": f"refused: it leads outside {tmp_path / 'mine'} (to /dev/zero)", "fifo": "refused: not a regular file",
                "outside": f"refused: it leads outside {tmp_path / 'mine'}", "folder": "refused: not a regular file", "loop": "cannot read it"}
    assert f"{entry}: {expected[kind]}" in run.stderr
    assert seconds < 10 and not (tmp_path / "out").exists()
    if kind == "outside":  # a link to a file inside the folder is read
        entry.unlink()
        entry.with_name("inside.yaml").write_text(ERRORS_BY_USER)
        entry.symlink_to("inside.yaml")
        with pytest.raises(grafana.DefinitionError, match="uid 'errors-by-user' is also inside's"):
            grafana.load_all(load_spec(path))  # read, then refused only for its uid


@pytest.mark.parametrize("source", ["/dev/zero", "fifo"])
def test_the_spec_and_a_dashboard_to_import_must_be_regular_files(tmp_path, source):
    if source == "fifo":
        os.mkfifo(tmp_path / "fifo")
        source = tmp_path / "fifo"
    run, _ = bounded_cli("render", "--spec", source, "--out", tmp_path / "out", cwd=tmp_path)
    assert run.returncode == 2 and f"{source}: refused: not a regular file" in run.stderr, run.stderr[-2000:]
    path = custom_spec(tmp_path)
    run, _ = bounded_cli("dashboards", "import", "--spec", path, source, cwd=tmp_path)
    assert run.returncode == 1 and f"{source}: refused: not a regular file" in run.stderr, run.stderr[-2000:]


def test_an_oversized_definition_is_refused_naming_the_limit(tmp_path):
    text = ERRORS_BY_USER + "# " + "x" * user_file.MAX_BYTES + "\n"
    spec = load_spec(custom_spec(tmp_path, errors_by_user=text))
    with pytest.raises(grafana.DefinitionError,
                       match=rf"errors_by_user\.yaml: refused: larger than {user_file.MAX_BYTES} bytes"):
        grafana.load_all(spec)


def test_deep_nesting_is_refused_with_a_line_not_a_traceback(tmp_path):
    (tmp_path / "analytics.yaml").write_text("version: " + "[" * 100_000 + "]" * 100_000 + "\n")
    run, _ = bounded_cli("render", "--spec", tmp_path / "analytics.yaml", "--out", tmp_path / "out", cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "analytics.yaml:1: not valid YAML: exceeded maximum nesting depth" in run.stderr
