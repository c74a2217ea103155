"""`cvat-analytics bench`: runs every phase in a process of its own and prints the report.

The orchestrator never opens chdb itself (one data path per process): each engine phase runs
as `python -m cvat_analytics.bench PHASE CONFIG RESULT`, so its peak memory is its own.
"""
from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..progress import Progress
from .export_download import export_via_service
from .load_generator import health_round_trips, send_bodies
from .measure import PANEL_RUNS
from .report import build_report, format_table
from .service import ServeProcess
from .sql_beside_ingest import ingest_beside_sql

DEFAULT_EVENTS = 10_000_000
DAYS = 30  # the data spans 30 days; dashboards read the last 7
INGEST_SAMPLE = {1000: 500_000, 100: 100_000}  # events sent per body size (at most N)
SENDERS = 4


class Runner:
    """Starts phases as child processes; a phase's config and result are JSON files in the workdir."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.count = 0
        self.children: list[subprocess.Popen] = []

    def start(self, phase: str, cfg: dict) -> tuple[subprocess.Popen, Path]:
        self.count += 1
        config = self.workdir / f"{phase}_{self.count}.config.json"
        result = self.workdir / f"{phase}_{self.count}.result.json"
        config.write_text(json.dumps(cfg))
        # A SIGTERM inside Popen, after the fork, would unwind before the phase is recorded and
        # leave it running (a fresh-clone run saw a load phase outlive its bench): it is held
        # until then and sent again. (The phase does not inherit the handler: exec resets it.)
        held = []
        previous = signal.signal(signal.SIGTERM, lambda *_: held.append(True))
        try:
            proc = subprocess.Popen([sys.executable, "-m", "cvat_analytics.bench", phase, str(config), str(result)],
                                    cwd=str(Path(__file__).resolve().parents[2]))
            self.children.append(proc)
        finally:
            signal.signal(signal.SIGTERM, previous)
            if held:
                os.kill(os.getpid(), signal.SIGTERM)
        return proc, result

    def stop(self) -> None:
        """End the phases still running (the bench stopped early): each holds a chdb path."""
        for proc in self.children:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.children:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait(self, phase: str, started: tuple[subprocess.Popen, Path]) -> dict:
        proc, result = started
        if proc.wait() != 0:
            raise RuntimeError(f"bench phase {phase} failed (exit code {proc.returncode})")
        return json.loads(result.read_text())

    def run(self, phase: str, cfg: dict) -> dict:
        return self.wait(phase, self.start(phase, cfg))


def run(n: int = DEFAULT_EVENTS, json_path: str | None = None, spec_path: str | None = None,
        workdir: str | None = None, keep: bool = False, seed: int = 1, err=sys.stderr,
        out=sys.stdout, senders: int = SENDERS, runs: int = PANEL_RUNS) -> dict:
    from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec

    spec_path = str(Path(spec_path or DEFAULT_SPEC).resolve())
    load_spec(Path(spec_path))
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cvat-analytics-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(work)
    now_ms = (int(time.time()) - 120) * 1000
    ingest = {str(size): min(n, count) for size, count in INGEST_SAMPLE.items()}
    base = {"workdir": str(work), "spec": spec_path, "n": n, "days": DAYS, "seed": seed,
            "now_ms": now_ms, "ingest": ingest, "runs": runs}
    main = {**base, "dsn": f"chdb://{work / 'store'}"}
    started = time.monotonic()
    step = [0]
    steps = 11
    r: dict = {}

    def say(text: str) -> None:  # a log line per step, on a terminal or not
        step[0] += 1
        print(f"[{step[0]}/{steps}] {text} ({time.monotonic() - started:.0f}s)", file=err, flush=True)

    try:
        say(f"generating {n:,} demo events over {DAYS} days and loading them (ours + CVAT's schema)")
        gen = runner.start("gen", base)
        bodies = runner.start("bodies", base)
        r["load"] = load = runner.run("load", main)
        r["gen"] = runner.wait("gen", gen)
        say("working time: window SQL over all users")
        r["wt_sql"] = runner.run("wt_sql", main)
        say("working time: executable UDF")
        r["wt_udf"] = runner.run("wt_udf", main)
        say("working time: Python baseline (CVAT's per-batch loop)")
        r["wt_python"] = runner.run("wt_python", main)
        say("dashboards: each panel, ours vs CVAT's schema")
        r["dashboards"] = runner.run("dashboards", {**main, "user_id": load["user_id"], "job_id": load["job_id"]})
        say("export: CVAT's export code on CVAT's schema")
        r["cvat_export"] = runner.run("cvat_export", {**main, "export_from": load["export_from"],
                                                      "export_to": load["export_to"]})
        say("export: GET /api/events on `serve`")
        svc = ServeProcess(main["dsn"], spec_path, work / "serve-export.log")
        try:
            r["exp"] = export_via_service(svc, load["export_from"], load["export_to"], work / "export.csv")
        finally:
            svc.stop()
        runner.wait("bodies", bodies)
        say("ingest beside an analyst's full scan on /clickhouse (100-event bodies, half alone, half beside)")
        svc = ServeProcess(main["dsn"], spec_path, work / "serve-sql.log")
        try:
            r["sql_beside_ingest"] = ingest_beside_sql(svc.url, load_spec(Path(spec_path))["clickhouse"]["database"],
                                                       work / "bodies_100.bin", senders, svc.sql_token)
        finally:
            svc.stop()
        say("ingest ceiling: the engine's own insert rate through clickhouse-connect")
        r["ceiling"] = runner.run("ceiling", {**base, "dsn": f"chdb://{work / 'ceiling'}"})
        r["ingest"] = {}
        for size in sorted(ingest, key=int, reverse=True):
            say(f"ingest: {ingest[size]:,} events into `serve` over HTTP, {size}-event bodies, {senders} senders")
            svc = ServeProcess(f"chdb://{work / f'ingest_{size}'}", spec_path, work / f"serve-ingest-{size}.log")
            try:
                idle = {"kept_alive": health_round_trips(svc.url), "new_connection": health_round_trips(svc.url, keep_alive=False)}
                stats: dict = {}  # acknowledgement times (p50, p99) and 503s
                with Progress("ingest", total=ingest[size], stream=err) as progress:
                    stored, secs = send_bodies(svc.url, work / f"bodies_{size}.bin", senders, progress, stats)
                r["ingest"][size] = {"events": stored, "seconds": secs, "rate": stored / secs,
                                     "server_peak_mb": svc.rss("VmHWM"), "idle_health": idle, **stats}
            finally:
                svc.stop()
    finally:
        runner.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

    report = build_report(r, senders, time.monotonic() - started)
    print(format_table(report), file=out)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report
