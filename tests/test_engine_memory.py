"""The embedded engine's caches and memory cap are the spec's (embedded.engine), not ClickHouse's
defaults (5 GiB per cache, 90% of RAM): seen by a real serve's engine through /clickhouse."""
from __future__ import annotations

import urllib.parse
import urllib.request

import pytest

from cvat_analytics.bench.service import ServeProcess
from cvat_analytics_generator.spec import DEFAULT_SPEC, SpecError, load_spec

SIZES = {"mark_cache_mb": 48, "primary_index_cache_mb": 24, "uncompressed_cache_mb": 8, "max_server_memory_mb": 900}
SETTINGS = {"mark_cache_mb": "mark_cache_size", "primary_index_cache_mb": "primary_index_cache_size",
            "uncompressed_cache_mb": "uncompressed_cache_size", "max_server_memory_mb": "max_server_memory_usage"}


def spec_with(tmp_path, **sizes):
    text = DEFAULT_SPEC.read_text()
    for key, value in sizes.items():
        line = next(l for l in text.splitlines() if l.strip().startswith(f"{key}:"))
        text = text.replace(line, f"{line.split(':')[0]}: {value}", 1)
    path = tmp_path / "analytics.yaml"
    path.write_text(text)
    return path


@pytest.mark.clickhouse
@pytest.mark.slow
def test_serve_opens_the_engine_with_the_specs_cache_sizes_and_cap(tmp_path):
    svc = ServeProcess(f"chdb://{tmp_path / 'store'}", spec_with(tmp_path, **SIZES))
    try:
        query = urllib.parse.urlencode({"query": "SELECT name, value FROM system.server_settings WHERE name IN "
                                                 "('mark_cache_size', 'primary_index_cache_size', "
                                                 "'uncompressed_cache_size', 'max_server_memory_usage')"})
        request = urllib.request.Request(f"{svc.url}/clickhouse/?{query}",
                                         headers={"Authorization": f"Bearer {svc.sql_token}"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            got = dict(line.split("\t") for line in resp.read().decode().splitlines())
    finally:
        svc.stop()
    assert got == {SETTINGS[k]: str(v * 1048576) for k, v in SIZES.items()}


def test_a_cap_below_what_ingest_and_the_refresh_need_is_refused_naming_the_key(tmp_path):
    with pytest.raises(SpecError, match="max_server_memory_mb"):
        load_spec(spec_with(tmp_path, max_server_memory_mb=256))
