"""Measure the working-time refresh over a large backlog (issue 27): a store as the bench's
load leaves it (its refresh log set back to one run before the load), then the refresh's
runs until current, each iteration's peak RSS of this process (the engine runs in it) and
the log rows written meanwhile (the run that logs `recompute all`, then one per bucket).

It rewrites the store's refresh log: run it on a COPY of a bench store, e.g. the one
scripts/measure_serve_memory.py --build-only leaves in --workdir:

    cp -a /tmp/sm-10m/store /tmp/backlog-store
    .venv/bin/python scripts/measure_refresh_backlog.py /tmp/backlog-store --before '2026-12-06 15:32:23'

--before: a time after the store was migrated and before its events were loaded.
"""
from __future__ import annotations

import argparse
import datetime
import re
import time
from pathlib import Path

from cvat_analytics import store as store_module
from cvat_analytics.migrate import migrate
from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec


def memory_mb() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1]) // 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path)
    ap.add_argument("--before", required=True, help="UTC time of the one run logged before the load")
    ap.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    args = ap.parse_args()
    spec = load_spec(args.spec)
    db = spec["clickhouse"]["database"]
    client = store_module.connect(f"chdb://{args.store.resolve()}", engine=store_module.engine_settings(spec))
    migrate(client, spec, log=print)
    client.command(f"SYSTEM STOP VIEW {db}.working_time_refresh")
    time.sleep(1)
    # the rule the store's runs log (the spec's: migrate applied it)
    rule = client.command(f"SELECT argMax(rule, watermark) FROM {db}.working_time_refresh_log WHERE rule LIKE '[%'")
    client.command(f"TRUNCATE TABLE {db}.working_time_refresh_log")
    client.command(f"INSERT INTO {db}.working_time_refresh_log (refreshed_at, watermark, rule, full, users, full_bucket, "
                   f"full_buckets) VALUES ('{args.before}', '{args.before}', '{rule}', 1, 0, 0, 1)")
    client.command(f"SYSTEM START VIEW {db}.working_time_refresh")
    print("before the runs", memory_mb(), flush=True)
    started, last = time.monotonic(), datetime.datetime(1970, 1, 1)
    for i in range(1000):
        time.sleep(6)  # the engine's allocator returns freed pages after 5 s
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here
        base, t = memory_mb()["VmRSS"], time.monotonic()
        error = ""
        try:
            client.command(f"SYSTEM REFRESH VIEW {db}.working_time_refresh")
            client.command(f"SYSTEM WAIT VIEW {db}.working_time_refresh")
        except Exception as exc:  # the run's error: shown, and the log row of the next says it too
            error = re.sub(r"\s+", " ", str(exc))[:160]
        rows = client.query(
            f"SELECT refreshed_at, rule, full_bucket, full_buckets, users, recomputed_events, failures "
            f"FROM {db}.working_time_refresh_log WHERE refreshed_at > {{t:DateTime64(6)}} ORDER BY refreshed_at",
            parameters={"t": last}).result_rows
        last = rows[-1][0] if rows else last
        print(f"iteration {i}: {time.monotonic() - t:.1f} s, RSS {base} MB before, peak {memory_mb()['VmHWM']} MB {error}",
              flush=True)
        for r in rows:
            print("   ", r[0].strftime("%H:%M:%S"), "rule", r[1], "bucket", r[2], "of", r[3], "users", r[4],
                  "events", r[5], "failures", r[6], flush=True)
        if rows and rows[-1][2] < 0 and rows[-1][1] != "recompute all" and not rows[-1][6] and not error and i:
            break
    print(f"current after {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
