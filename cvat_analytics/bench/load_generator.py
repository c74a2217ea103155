"""The load generator: CVAT's bodies POSTed to serve from concurrent keep-alive connections."""
from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

from ..progress import Progress
from .generate import read_bodies


def send_bodies(url: str, path: Path, senders: int, progress: Progress | None = None,
                stats: dict | None = None, bodies: list[bytes] | None = None) -> tuple[int, float]:
    """POST every body in `path` (or `bodies`, read from it already) from `senders` keep-alive
    connections; (events stored, seconds). A 503 (ingest busy) is retried after its Retry-After.
    `stats`, when given, receives the acknowledgement time of each body (p50/p99, ms, from send
    to 200) and the 503s counted."""
    bodies = read_bodies(path) if bodies is None else bodies
    host, port = url.split("//", 1)[1].split(":")
    lock = threading.Lock()
    state = {"next": 0, "stored": 0, "error": None, "busy": 0}
    acknowledged_ms: list[float] = []

    def worker():
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
            if i >= len(bodies) or state["error"]:
                break
            sent = time.monotonic()
            conn.request("POST", "/", bodies[i], {"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read()
            while resp.status == 503:
                with lock:
                    state["busy"] += 1
                time.sleep(float(resp.getheader("Retry-After", "1")))
                conn.request("POST", "/", bodies[i], {"Content-Type": "application/json"})
                resp = conn.getresponse()
                answer = resp.read()
            acknowledged_ms.append((time.monotonic() - sent) * 1000)
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
    if stats is not None:
        ranked = sorted(acknowledged_ms) or [0.0]
        stats.update(ack_p50_ms=ranked[len(ranked) // 2], ack_p99_ms=ranked[min(len(ranked) - 1, len(ranked) * 99 // 100)],
                     busy_503=state["busy"])
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
