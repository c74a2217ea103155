"""Ingest into `serve` with and without an analyst's full scan running on /clickhouse.

The 100-event bodies are split in two halves: the first is sent alone, the second while
one analyst connection runs a full scan of the store back to back (docs/working-time-and-sql.md, SQL)."""
from __future__ import annotations

import http.client
import statistics
import threading
import time
from urllib.parse import urlencode, urlsplit

from . import statements
from .generate import read_bodies
from .load_generator import send_bodies


def ingest_beside_sql(url: str, database: str, bodies_path, senders: int, token: str) -> dict:
    """`token`: a secret with the sql permission (the SQL interface always needs one)."""
    bodies = read_bodies(bodies_path)
    half = len(bodies) // 2
    alone, alone_s = send_bodies(url, bodies_path, senders, bodies=bodies[:half])
    query = urlencode({"query": statements.sql("full_scan"), "param_db": database})
    stop, scans = threading.Event(), []

    def analyst():
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
        while not stop.is_set():
            started = time.monotonic()
            conn.request("GET", "/clickhouse/?" + query, headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"the full scan failed: HTTP {response.status}: {answer[:200]!r}")
            scans.append(time.monotonic() - started)

    scanner = threading.Thread(target=analyst)
    scanner.start()
    try:
        while not scans and scanner.is_alive():  # the first scan is under way, or done
            time.sleep(0.05)
        beside, beside_s = send_bodies(url, bodies_path, senders, bodies=bodies[half:])
    finally:
        stop.set()
        scanner.join()
    return {"alone_rate": alone / alone_s, "beside_rate": beside / beside_s, "events": alone + beside,
            "scans": len(scans), "scan_median_s": statistics.median(scans) if scans else None}
