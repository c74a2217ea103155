"""What every phase measures with: memory, the machine, a query's median time, a store to open."""
from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from pathlib import Path

from . import statements

PANEL_RUNS = 5  # timed runs per query after one warm-up (bench --runs); the median is reported


def peak_mb() -> float:
    """This process's peak resident memory, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """CPU seconds this process has used, every thread (the engine's too): on a shared machine
    the wall time of a phase also counts the time it waited for a core, its CPU time does not."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_mb(pid: int, key: str = "VmRSS") -> float:
    """VmRSS (now), VmHWM (peak) or RssAnon (now, anonymous pages only) of another process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine() -> dict:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                  if l.startswith("MemTotal:"))
    import chdb

    return {"nproc": os.cpu_count(), "ram_gb": round(mem_kb / 1024 / 1024, 1), "cpu": model,
            "python": sys.version.split()[0], "chdb": getattr(chdb, "__version__", "?")}


def ts_text(ms: int) -> str:
    """Epoch ms as ClickHouse's DateTime64(3) text."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"


def open_store(cfg: dict) -> tuple[dict, object]:
    """(spec, client) for a phase's config: the spec file and the store's DSN."""
    from cvat_analytics_generator.spec import load_spec

    from ..store import connect

    return load_spec(Path(cfg["spec"])), connect(cfg["dsn"])


def warm_up(client) -> float:
    """Run a first query so the engine is up; the memory it holds then (the phase's base)."""
    statements.run(client, "warm_up")
    return peak_mb()


def median_time(client, sql: str, parameters: dict | None = None, runs: int = PANEL_RUNS) -> float:
    """Median seconds of `runs` runs of `sql` after one warm-up run (caches, marks)."""
    client.raw_query(sql, parameters=parameters)
    times = []
    for _ in range(runs):
        t = time.monotonic()
        client.raw_query(sql, parameters=parameters, fmt="Native")
        times.append(time.monotonic() - t)
    return statistics.median(times)
