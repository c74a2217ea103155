"""The spec: the default is valid, and every kind of mistake gets one actionable line."""
import subprocess
import sys

import pytest
import yaml

from cvat_analytics_generator.spec import DEFAULT_SPEC, SpecError, load_spec
from cvat_analytics_generator.yaml_load import safe_load
from tests.conftest import REPO, write_spec


def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "cvat_analytics.cli", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_default_spec_is_valid_and_has_the_defaults_the_issue_names():
    spec = load_spec()
    assert spec["clickhouse"]["database"] == "cvat"
    assert spec["vector"]["port"] == 8282
    assert spec["working_time"]["idle_threshold_ms"] == 100000
    assert spec["working_time"]["collapsed_scopes"] == ["change:frame"]
    assert spec["bind_address"] == "127.0.0.1"
    assert [c["name"] for c in spec["events"]["columns"]][:3] == ["scope", "obj_name", "obj_id"]


@pytest.mark.parametrize("key, value, expected_key, expected_text", [
    ("clickhouse.retention_days", "ninety", "clickhouse.retention_days", "whole days"),
    ("vector.batch.max_events", 0, "vector.batch.max_events", "events per batch"),
    ("grafana.auth_mode", "anonymous_admin", "grafana.auth_mode", "login or anonymous_viewer"),
    ("clickhouse.users.ingest", "x; DROP", "clickhouse.users.ingest", "identifier"),
    ("vector.buffer_max_size_bytes", 1024, "vector.buffer_max_size_bytes", "268435488"),
    ("clickhouse.version", "latest", "clickhouse.version", "exact version"),
    ("working_time.collapsed_scopes", ["create:task"], "working_time.collapsed_scopes.0", "client scope"),
    ("grafana.port", 8282, "grafana.port", "already used by vector.port"),
    ("bind_address", "999.1.1.1", "bind_address", "IPv4"),
    ("clickhouse.server.prometheus_port", 9009, "clickhouse.server.prometheus_port", "does not already listen on"),
    ("clickhouse.server.prometheus_port", 0, "clickhouse.server.prometheus_port", "port"),
    # written into serve's JE_MALLOC_CONF: a whole number of ms, nothing an allocator option could ride on
    ("embedded.engine.allocator_decay_ms", "200,background_thread:false", "embedded.engine.allocator_decay_ms",
     "(0 - 60000)"),
    ("embedded.engine.allocator_decay_ms", 60001, "embedded.engine.allocator_decay_ms", "(0 - 60000)"),
])
def test_a_bad_value_names_its_key_and_what_was_expected(tmp_path, key, value, expected_key, expected_text):
    _, path = write_spec(tmp_path, **{key: value})
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert message.startswith(f"{path}:")
    assert f": {expected_key}: expected" in message
    assert expected_text in message


def test_unknown_and_missing_keys(tmp_path):
    data = safe_load(DEFAULT_SPEC.read_text())
    data["vector"]["batch"]["max_event"] = 5
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"vector\.batch\.max_event: unknown key; expected one of: max_events, timeout_secs"):
        load_spec(tmp_path / "a.yaml")
    data = safe_load(DEFAULT_SPEC.read_text())
    del data["clickhouse"]["server"]["log_level"]
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"clickhouse\.server\.log_level: missing key"):
        load_spec(tmp_path / "b.yaml")


def test_the_message_points_at_the_line_of_the_key(tmp_path):
    text = DEFAULT_SPEC.read_text().replace("retention_days: 365", "retention_days: -1")
    (tmp_path / "s.yaml").write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "retention_days: -1" in l)
    with pytest.raises(SpecError, match=rf"s\.yaml:{line}: clickhouse\.retention_days"):
        load_spec(tmp_path / "s.yaml")


def test_columns_must_keep_cvats_names_and_order(tmp_path):
    data = safe_load(DEFAULT_SPEC.read_text())
    cols = data["events"]["columns"]
    cols[0], cols[1] = cols[1], cols[0]
    _, path = write_spec(tmp_path, **{"events.columns": cols})
    with pytest.raises(SpecError, match="in that order"):
        load_spec(path)


def test_broken_yaml_names_the_line(tmp_path):
    (tmp_path / "s.yaml").write_text("version: 1\nclickhouse: [unclosed\n")
    with pytest.raises(SpecError, match=r"s\.yaml:\d+: not valid YAML"):
        load_spec(tmp_path / "s.yaml")


@pytest.mark.parametrize("command", [
    ["render", "--out", "OUT"], ["check", "--out", "OUT"], ["migrate", "--dsn", "chdb://OUT"],
    ["import", "--dsn", "chdb://OUT", "-"], ["query", "--dsn", "chdb://OUT", "SELECT 1"],
    ["serve", "--dsn", "chdb://OUT", "--port", "1"],
])
def test_every_command_that_reads_the_spec_exits_2_with_one_line(tmp_path, command):
    _, path = write_spec(tmp_path, **{"clickhouse.server.system_log_ttl_days": "seven"})
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    result = cli(*args, "--spec", str(path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "clickhouse.server.system_log_ttl_days: expected whole days" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing rendered, no chdb path created


def test_a_spec_read_again_is_a_copy_of_its_own_and_follows_the_file(tmp_path):
    """load_spec keeps the specs it validated (tests read the same file hundreds of times):
    a caller that changes what it got changes nobody else's, and a file rewritten with a
    mistake, or with another value, is read as it is now."""
    _, path = write_spec(tmp_path, **{"clickhouse.retention_days": 30})
    first = load_spec(path)
    first["clickhouse"]["retention_days"] = 1
    first["events"]["columns"].clear()
    again = load_spec(path)
    assert again["clickhouse"]["retention_days"] == 30 and len(again["events"]["columns"]) >= 18
    assert again is not load_spec(path)
    write_spec(tmp_path, **{"clickhouse.retention_days": "ninety"})
    with pytest.raises(SpecError, match="clickhouse.retention_days"):
        load_spec(path)
    write_spec(tmp_path, **{"clickhouse.retention_days": 31})
    assert load_spec(path)["clickhouse"]["retention_days"] == 31
    (tmp_path / "boards").mkdir()
    data, _ = write_spec(tmp_path, custom_dashboards_dir="boards")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "analytics.yaml").write_text(path.read_text())
    assert load_spec(path)["custom_dashboards_dir"] == str(tmp_path / "boards")
    assert load_spec(tmp_path / "elsewhere" / "analytics.yaml")["custom_dashboards_dir"] == str(tmp_path / "elsewhere" / "boards")


@pytest.mark.parametrize("key, value, expected_key", [
    ("clickhouse.users.admin", "admin\n", "clickhouse.users.admin"),  # raw in the k8s CHI's users: keys
    ("kubernetes.namespace", "cvat\n", "kubernetes.namespace"),
    ("kubernetes.clickhouse.cpu", "2\n", "kubernetes.clickhouse.cpu"),
    ("clickhouse.database", "cvat\n", "clickhouse.database"),
])
def test_a_final_line_break_does_not_pass_a_pattern(tmp_path, key, value, expected_key):
    """A pattern's `$` is the end of the value (as JSON Schema's ECMA-262 reads it), not the
    point before a final line break (Python's re.search): "admin\\n" rendered `admin` and a line
    of its own into the k8s manifest, which no longer parsed."""
    _, path = write_spec(tmp_path, **{key: value})
    with pytest.raises(SpecError) as excinfo:
        load_spec(path)
    assert expected_key in str(excinfo.value)


@pytest.mark.parametrize("changes, key, expected", [
    ({"working_time.refresh_max_memory_mb": 32}, "working_time.refresh_max_memory_mb", "MiB (64-1048576)"),
    ({"working_time.refresh_max_memory_mb": 256, "working_time.refresh_spill_mb": 256},
     "working_time.refresh_spill_mb", "less than working_time.refresh_max_memory_mb (256), got 256"),
])
def test_a_refresh_cap_that_could_not_record_its_own_failure_is_refused(tmp_path, changes, key, expected):
    """Below 64 MiB even the run that records a failure fails, so the refresh would never back
    off; a spill threshold at or above the cap would never spill before the cap stops the run."""
    _, path = write_spec(tmp_path, **changes)
    with pytest.raises(SpecError) as excinfo:
        load_spec(path)
    assert key in str(excinfo.value) and expected in str(excinfo.value)


@pytest.mark.parametrize("key, value", [(key, value)
                                        for key, top in (("refresh_max_threads", 256), ("productivity_refresh_interval_s", 3600))
                                        for value in (0, top + 1, "1; SELECT 1", 1.5)])
def test_a_refresh_threads_or_interval_value_out_of_range_is_refused(tmp_path, key, value):
    """working_time.refresh_max_threads lands in the refresh views' SETTINGS (an integer 1-256
    only), productivity_refresh_interval_s in the productivity view's REFRESH EVERY (1-3600)."""
    _, path = write_spec(tmp_path, **{f"working_time.{key}": value})
    with pytest.raises(SpecError) as excinfo:
        load_spec(path)
    assert f"working_time.{key}" in str(excinfo.value)


@pytest.mark.parametrize("slot_s, ok", [(60, True), (300, True), (3600, True), (7, False), (1000, False), (0, False)])
def test_a_refresh_slot_must_divide_the_hour(tmp_path, slot_s, ok):
    """Slots start on the hour, so a recompute from a slot's hour needs no per-slot row."""
    _, path = write_spec(tmp_path, **{"working_time.refresh_slot_s": slot_s})
    if ok:
        assert load_spec(path)["working_time"]["refresh_slot_s"] == slot_s
        return
    with pytest.raises(SpecError) as excinfo:
        load_spec(path)
    assert "working_time.refresh_slot_s" in str(excinfo.value)
    if slot_s:
        assert f"a divisor of 3600 (60, 300, 600, ...), got {slot_s}" in str(excinfo.value)
