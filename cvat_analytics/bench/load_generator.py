"""The load generator: CVAT's bodies POSTed to serve from concurrent keep-alive connections."""
from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

from ..progress import Progress
from .generate import read_bodies


def send_bodies(url: str, path: Path, senders: int, progress: Progress | None = None) -> tuple[int, float]:
    """POST every body in `path` from `senders` keep-alive connections; (events stored, seconds)."""
    bodies = read_bodies(path)
    host, port = url.split("//", 1)[1].split(":")
    lock = threading.Lock()
    state = {"next": 0, "stored": 0, "error": None}

    def worker():
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
            if i >= len(bodies) or state["error"]:
                break
            conn.request("POST", "/", bodies[i], {"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read()
            if resp.status != 200:
                state["error"] = f"HTTP {resp.status}: {answer[:200]!r}"
                break
            with lock:
                state["stored"] += json.loads(answer)["stored"]
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(senders)]
    t = time.monotonic()
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        if progress:
            progress.update(state["stored"])
        for th in threads:
            th.join(timeout=0.5)
    elapsed = time.monotonic() - t
    if state["error"]:
        raise RuntimeError(f"ingest failed: {state['error']}")
    return state["stored"], elapsed


def health_round_trips(url: str, count: int = 200, keep_alive: bool = True) -> dict:
    """Median and p99 (ms) of `count` GET /health on one kept-alive connection (or a new
    connection each), while the service is idle: the latency a small request pays."""
    host, port = url.split("//", 1)[1].split(":")
    conn, times = None, []
    for _ in range(count):
        t = time.perf_counter()
        conn = conn if keep_alive and conn else http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", "/health")
        conn.getresponse().read()
        times.append((time.perf_counter() - t) * 1000)
        if not keep_alive:
            conn.close()
    conn.close()
    times.sort()
    return {"median_ms": times[len(times) // 2], "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))]}
