"""`cvat-analytics bench soak`: steady ingest into a real `serve` for N minutes, measured each minute.

What it does (docs/benchmarks.md, Soak):

1. starts `serve` (the embedded default, chdb) in a child process on 127.0.0.1, on a fresh store;
2. posts CVAT's bodies (100 events, ~40 users, demo traffic stamped with the wall clock) at
   `rate` events/s from keep-alive senders; each event carries its sequence number in its
   payload (`soak`), so every acknowledged event can be found, once;
3. each interval (a minute): serve's RSS (at its end, and the median of a sample every half
   second: a run of a refresh or a group commit moves RSS by tens of MB for a second or two,
   so one sample says where in that cycle it fell) and anonymous memory, the acknowledgement p50/p99,
   events acknowledged, and the working-time refresh's runs (system.view_refreshes, read every
   second through serve's /clickhouse with the SQL token: each run once, by its end time);
4. at the end, with serve stopped and the store opened here: stored == acknowledged ==
   distinct sequence numbers; working_time_totals per user equal to the query-time figure
   (the `working-time` command's); RSS growth from minute 10 (or the run's middle) to the end,
   by the minutes' medians.

It prints a row per interval as it goes and writes everything as JSON.
"""
from __future__ import annotations

import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from .. import demo
from . import statements
from .service import ServeProcess

USERS = 40
BODY_EVENTS = 100
SENDERS = 4  # keep-alive connections; the schedule, not they, sets the rate
WARM_UP_MINUTES = 10  # RSS growth is measured from here (or the run's middle, if shorter)
TEMPLATE_EVENTS = 20_000  # demo events cycled through (their shapes; time and user are the soak's)
RUN_EVENTS = 50  # consecutive events of one user


class SoakError(Exception):
    """A soak that cannot start, worded for the operator."""


def templates(seed: int = 1) -> list[dict]:
    """Demo events as shapes to send, dealt to USERS users (the demo's world has fewer) in runs
    of RUN_EVENTS, so every user is active every few seconds, as in a busy team."""
    gen = demo.Demo(seed=seed, days=1)
    out = []
    for i, ev in enumerate(e for e in gen.events(TEMPLATE_EVENTS) if e.get("user_id") is not None):
        n = (i // RUN_EVENTS) % USERS + 1
        out.append({**ev, "user_id": 100_000 + n, "user_name": f"soak{n}", "user_email": f"soak{n}@example.com"})
    return out


def body(shapes: list[dict], first: int, t0_ms: float, rate: float) -> bytes:
    """Events first .. first+BODY_EVENTS-1: event k at t0 + (k - BODY_EVENTS)/rate, `soak: k+1` in its payload."""
    events = []
    for k in range(first, first + BODY_EVENTS):
        ev = dict(shapes[k % len(shapes)])
        ev["_ts"] = int(t0_ms + (k - BODY_EVENTS) * 1000 / rate)  # none after its send
        ev["payload"] = {**(ev["payload"] or {}), "soak": k + 1}  # from 1: 0 is JSONExtract's "absent"
        events.append(demo.to_wire(ev))
    return json.dumps(events, ensure_ascii=False).encode()


def percentile(values: list[float], p: int) -> float:
    ranked = sorted(values) or [0.0]
    return ranked[min(len(ranked) - 1, len(ranked) * p // 100)]


class Sql:
    """Statements of bench/templates on serve's /clickhouse (read-only), with the SQL token."""

    def __init__(self, svc: ServeProcess, database: str):
        self.svc, self.database = svc, database
        self.conn: http.client.HTTPConnection | None = None

    def rows(self, name: str) -> list[list[str]]:
        query = urlencode({"query": statements.sql(name), "param_db": self.database,
                           "default_format": "TSV"})
        if self.conn is None:
            host, port = self.svc.url.split("//", 1)[1].split(":")
            self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            self.conn.request("GET", "/clickhouse/?" + query,
                              headers={"Authorization": f"Bearer {self.svc.sql_token}"})
            resp = self.conn.getresponse()
            answer = resp.read().decode()
        except (OSError, http.client.HTTPException):
            self.conn = None
            raise
        if resp.status != 200:
            raise RuntimeError(f"/clickhouse answered {resp.status}: {answer[:300]}")
        return [line.split("\t") for line in answer.splitlines()]


class Soak:
    def __init__(self, svc: ServeProcess, database: str, rate: float, seconds: float, interval_s: float,
                 senders: int, err):
        self.svc, self.rate, self.seconds, self.interval_s = svc, rate, seconds, interval_s
        self.senders, self.err = senders, err
        self.sql = Sql(svc, database)
        self.shapes = templates()
        self.lock = threading.Lock()
        self.next_body = 0
        self.acked = 0  # events serve answered 200 for
        self.acks: list[float] = []  # this interval's acknowledgement times, ms
        self.busy = 0  # 503s (retried)
        self.behind_s = 0.0  # how far the senders fell behind the schedule, at most
        self.error: str | None = None
        self.runs: dict[tuple[str, str], tuple] = {}  # refresh runs seen: (refresh, its end) -> (ms, rows read)
        self.refresh_errors: set[str] = set()
        self.stop = threading.Event()

    def sender(self, t0: float, t0_ms: float) -> None:
        host, port = self.svc.url.split("//", 1)[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        total_bodies = int(self.seconds * self.rate / BODY_EVENTS)
        while not self.stop.is_set() and self.error is None:
            with self.lock:
                b = self.next_body
                self.next_body += 1
            if b >= total_bodies:
                break
            due = t0 + b * BODY_EVENTS / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                self.behind_s = max(self.behind_s, -wait)
            data = body(self.shapes, b * BODY_EVENTS, t0_ms, self.rate)
            sent = time.monotonic()
            try:
                while True:
                    conn.request("POST", "/", data, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    answer = resp.read()
                    if resp.status != 503:
                        break
                    with self.lock:
                        self.busy += 1
                    time.sleep(float(resp.getheader("Retry-After", "1")))
            except (OSError, http.client.HTTPException) as exc:
                self.error = f"body {b}: {exc!r}"
                break
            ms = (time.monotonic() - sent) * 1000
            if resp.status != 200:
                self.error = f"body {b}: HTTP {resp.status}: {answer[:200]!r}"
                break
            with self.lock:
                self.acks.append(ms)
                self.acked += json.loads(answer)["stored"]
        conn.close()

    def watch_refreshes(self) -> None:
        """Every second: the refresh under way (its rows read so far) and the last one ended
        (its duration); a run is kept once, by its end, with the most rows seen it read."""
        read_by_start: dict[tuple[str, str], int] = {}
        while not self.stop.wait(1.0):
            try:
                rows = self.sql.rows("soak_refreshes")
            except (OSError, http.client.HTTPException, RuntimeError):
                continue  # serve busy or stopping: the next second tries again
            for refresh, started, ended, ms, read_rows, exception in rows:
                if exception:
                    self.refresh_errors.add(f"{refresh}: {exception[:200]}")
                read_by_start[refresh, started] = max(read_by_start.get((refresh, started), 0), int(read_rows))
                if ended and (refresh, ended) not in self.runs:
                    # the run that ended: the latest start at or before its end
                    start = max((s for r, s in read_by_start if r == refresh and s <= ended), default="")
                    with self.lock:
                        self.runs[refresh, ended] = (int(ms), read_by_start.get((refresh, start), 0))

    def run(self) -> list[dict]:
        t0, t0_ms = time.monotonic(), time.time() * 1000
        threads = [threading.Thread(target=self.sender, args=(t0, t0_ms), name=f"sender-{i}")
                   for i in range(self.senders)]
        threads.append(threading.Thread(target=self.watch_refreshes, name="refreshes", daemon=True))
        for th in threads:
            th.start()
        minutes, seen_runs = [], set()
        print(TABLE_HEAD, file=self.err, flush=True)
        end = t0 + self.seconds
        index = 0
        while True:
            index += 1
            until = min(t0 + index * self.interval_s, end)
            rss = []
            while time.monotonic() < until and self.error is None and any(th.is_alive() for th in threads[:-1]):
                rss.append(self.svc.rss())
                time.sleep(min(0.5, max(0.0, until - time.monotonic())))
            with self.lock:
                acks, self.acks = self.acks, []
                acked, runs = self.acked, dict(self.runs)
            new = [runs[k] for k in runs if k not in seen_runs and k[0] == "working time"]
            productivity = [runs[k][0] for k in runs if k not in seen_runs and k[0] == "productivity"]
            seen_runs.update(runs)
            costs = [ms for ms, _ in new]
            row = {"minute": index, "elapsed_s": round(time.monotonic() - t0, 1), "acknowledged": acked,
                   "rate": len(acks) * BODY_EVENTS / max(until - (t0 + (index - 1) * self.interval_s), 1e-9),
                   "ack_p50_ms": percentile(acks, 50), "ack_p99_ms": percentile(acks, 99),
                   "rss_mb": self.svc.rss(), "rss_median_mb": statistics.median(rss or [self.svc.rss()]),
                   "anon_mb": self.svc.rss("RssAnon"), "peak_mb": self.svc.rss("VmHWM"),
                   "refresh_runs": len(new), "refresh_max_ms": max(costs, default=None),
                   "refresh_mean_ms": sum(costs) / len(costs) if costs else None,
                   "refresh_max_read_rows": max((r for _, r in new), default=None),
                   "productivity_runs": len(productivity), "productivity_max_ms": max(productivity, default=None),
                   "productivity_mean_ms": sum(productivity) / len(productivity) if productivity else None}
            minutes.append(row)
            print(format_row(row), file=self.err, flush=True)
            if self.error or time.monotonic() >= end - 0.01 or not any(th.is_alive() for th in threads[:-1]):
                break
        for th in threads[:-1]:
            th.join()
        self.stop.set()
        threads[-1].join()  # the watcher's connection is ours again (http.client: one request at a time)
        if self.error:
            raise RuntimeError(f"soak ingest failed: {self.error}")
        return minutes


TABLE_HEAD = (f"{'min':>4} {'acked':>10} {'ev/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7} {'RSS med':>7} {'anon MB':>7} "
              f"{'runs':>4} {'run max ms':>10} {'run mean ms':>11} {'read rows':>10} "
              f"{'prod runs':>9} {'prod mean ms':>12}")


def format_row(r: dict) -> str:
    def opt(v, width: int, fmt: str) -> str:
        return format(v, fmt).rjust(width) if v is not None else "-".rjust(width)

    return (f"{r['minute']:>4} {r['acknowledged']:>10,} {r['rate']:>7,.0f} {r['ack_p50_ms']:>7.1f} "
            f"{r['ack_p99_ms']:>7.1f} {r['rss_mb']:>7.0f} {r['rss_median_mb']:>7.0f} {r['anon_mb']:>7.0f} {r['refresh_runs']:>4} "
            f"{opt(r['refresh_max_ms'], 10, ',')} {opt(r['refresh_mean_ms'], 11, ',.0f')} "
            f"{opt(r['refresh_max_read_rows'], 10, ',')} {r['productivity_runs']:>9} "
            f"{opt(r['productivity_mean_ms'], 12, ',.0f')}")


def check_store(dsn: str, spec: dict, acknowledged: int) -> dict:
    """With serve stopped: stored once each, and the refresh's totals equal to the query-time ones."""
    from .. import working_time as wt
    from ..store import connect

    client = connect(dsn, create=False)
    db = spec["clickhouse"]["database"]
    stored, distinct = statements.rows(client, "soak_stored", db=db)[0]
    wt.wait_current(client, spec, timeout_s=600)
    refreshed = dict(statements.rows(client, "soak_user_totals", db=db))
    columns, rows = wt.totals(client, spec, ["user_id"], engine="sql")  # what `working-time` prints
    i, u = list(columns).index("working_time_ms"), list(columns).index("user_id")
    query_time = {r[u]: int(r[i]) for r in rows if int(r[i])}
    return {"acknowledged": acknowledged, "stored": int(stored), "distinct": int(distinct),
            "exactly_once": int(stored) == int(distinct) == acknowledged,
            "working_time_ms": sum(refreshed.values()), "query_time_ms": sum(query_time.values()),
            "totals_exact": refreshed == query_time, "users": len(query_time)}


def run(minutes: float, rate: float, spec_path: str | None = None, json_path: str | None = None,
        workdir: str | None = None, interval_s: float = 60, senders: int = SENDERS,
        err=sys.stderr, out=sys.stdout) -> dict:
    from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec

    spec_path = str(Path(spec_path or DEFAULT_SPEC).resolve())
    spec = load_spec(Path(spec_path))
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cvat-analytics-soak-"))
    if (work / "store").exists():
        raise SoakError(f"{work / 'store'} exists: the soak starts on a fresh store (give another --workdir)")
    work.mkdir(parents=True, exist_ok=True)
    dsn = f"chdb://{work / 'store'}"
    print(f"soak: {minutes:g} min at {rate:,.0f} events/s into serve on {work / 'store'} "
          f"({BODY_EVENTS}-event bodies, {senders} senders, {USERS} users)", file=err, flush=True)
    svc = ServeProcess(dsn, spec_path, work / "serve.log")
    try:
        soak = Soak(svc, spec["clickhouse"]["database"], rate, minutes * 60, interval_s, senders, err)
        rows = soak.run()
        stored_before_stop = soak.sql.rows("soak_stored")[0]
    finally:
        svc.stop()
    checks = check_store(dsn, spec, soak.acked)
    warm = min(WARM_UP_MINUTES, max(1, len(rows) // 2))
    base, last = rows[warm - 1]["rss_median_mb"], rows[-1]["rss_median_mb"]
    base_end, last_end = rows[warm - 1]["rss_mb"], rows[-1]["rss_mb"]
    costs = [r["refresh_max_ms"] for r in rows if r["refresh_max_ms"] is not None]
    report = {"minutes": minutes, "rate": rate, "interval_s": interval_s, "senders": senders,
              "users": USERS, "body_events": BODY_EVENTS, "store": str(work / "store"),
              "per_minute": rows, "stored_before_stop": [int(v) for v in stored_before_stop],
              "busy_503": soak.busy, "behind_schedule_max_s": soak.behind_s,
              "refresh_errors": sorted(soak.refresh_errors),
              "rss_from_minute": warm, "rss_growth_pct": (last - base) / base * 100,
              "rss_growth_at_minute_end_pct": (last_end - base_end) / base_end * 100,
              "ack_p99_max_ms": max(r["ack_p99_ms"] for r in rows),
              "refresh_runs": sum(r["refresh_runs"] for r in rows),
              "refresh_max_ms": max(costs, default=None),
              "productivity_runs": sum(r["productivity_runs"] for r in rows),
              "productivity_max_ms": max((r["productivity_max_ms"] for r in rows if r["productivity_max_ms"] is not None),
                                         default=None), **checks}
    print(summary(report), file=out)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary(r: dict) -> str:
    lines = [TABLE_HEAD] + [format_row(row) for row in r["per_minute"]]
    lines.append(f"events: {r['acknowledged']:,} acknowledged, {r['stored']:,} stored, {r['distinct']:,} distinct "
                 f"-> {'exactly once' if r['exactly_once'] else 'NOT exactly once'}")
    lines.append(f"working time: {r['working_time_ms']:,} ms refreshed, {r['query_time_ms']:,} ms at query time "
                 f"({r['users']} users) -> {'equal' if r['totals_exact'] else 'DIFFERENT'}")
    lines.append(f"RSS: {r['rss_growth_pct']:+.1f}% from minute {r['rss_from_minute']} to the end (the minutes' "
                 f"medians; {r['rss_growth_at_minute_end_pct']:+.1f}% by their last samples); "
                 f"ack p99 at most {r['ack_p99_max_ms']:.0f} ms; {r['refresh_runs']} working-time refresh runs, the "
                 f"longest {r['refresh_max_ms']} ms; {r['productivity_runs']} productivity refresh runs, the longest "
                 f"{r['productivity_max_ms']} ms; 503s {r['busy_503']}; behind schedule at most "
                 f"{r['behind_schedule_max_s']:.2f} s")
    if r["refresh_errors"]:
        lines.append("refresh errors: " + "; ".join(r["refresh_errors"]))
    return "\n".join(lines)
