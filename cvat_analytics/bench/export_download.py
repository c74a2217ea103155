"""The export measured as a user gets it: GET /api/events on serve, polled, downloaded, rows counted,
serve's memory sampled meanwhile."""
from __future__ import annotations

import csv
import json
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

from .service import ServeProcess


def export_via_service(svc: ServeProcess, t_from: str, t_to: str, out: Path) -> dict:
    q = urlencode({"from": t_from.replace(" ", "T") + "Z", "to": t_to.replace(" ", "T") + "Z"})
    rss0 = svc.rss()
    sampled = [rss0]
    # Anonymous memory apart: RSS also counts the pages of chdb's 555 MB library that are
    # mapped in (~200 MB, file-backed and shared), which no query of ours allocates.
    anon0 = svc.rss("RssAnon")
    anon = [anon0]
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            try:
                sampled.append(svc.rss())
                anon.append(svc.rss("RssAnon"))
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.monotonic()
    status, body = svc.get(f"/api/events?{q}")
    if status != 202:
        raise RuntimeError(f"export did not start: {status} {body[:200]!r}")
    query_id = json.loads(body)["query_id"]
    while True:
        status, body = svc.get(f"/api/events?{q}&query_id={query_id}")
        if status == 201:
            break
        if status != 202:
            raise RuntimeError(f"export failed: {status} {body[:200]!r}")
        time.sleep(0.1)
    rows = -1  # the header
    with urllib.request.urlopen(f"{svc.url}/api/events?{q}&query_id={query_id}&action=download",
                                timeout=600) as resp, open(out, "wb") as fh:
        while chunk := resp.read(1 << 20):
            fh.write(chunk)
    elapsed = time.monotonic() - t
    done.set()
    sampler.join()
    with open(out, "rb") as fh:
        for _ in csv.reader((line.decode() for line in fh)):
            rows += 1
    size = out.stat().st_size
    out.unlink()
    return {"rows": rows, "seconds": elapsed, "peak_mb": svc.rss("VmHWM"), "idle_mb": rss0,
            "export_peak_mb": max(sampled), "idle_anon_mb": anon0, "export_peak_anon_mb": max(anon),
            "bytes": size}
