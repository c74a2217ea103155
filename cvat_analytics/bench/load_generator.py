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
                bodies: list[bytes] | None = None) -> tuple[int, float]:
    """POST every body in `path` (or `bodies`, read from it already) from `senders` keep-alive
    connections; (events stored, seconds)."""
    bodies = read_bodies(path) if bodies is None else bodies
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
