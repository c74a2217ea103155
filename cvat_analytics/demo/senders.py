"""The demo's senders: POST CVAT's bodies to a service or Vector, or insert rows into a store."""
from __future__ import annotations

import json
import time
import urllib.request
from typing import Callable, Iterator

from ..store import insert_json_rows
from .wire import to_row, to_wire


def post_events(url: str, events: Iterator[dict], batch: int = 100,
                progress: Callable[[int], None] | None = None, timeout: float = 30.0) -> int:
    """POST JSON arrays of `batch` events (CVAT's bodies) to a service or Vector."""
    sent, buf = 0, []

    def send(items):
        body = json.dumps(items, ensure_ascii=False).encode()
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        for attempt in range(5):
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    resp.read()
                    return
            except OSError:
                if attempt == 4:
                    raise
                time.sleep(0.5 * 2 ** attempt)

    for i, ev in enumerate(events):
        buf.append(to_wire(ev, micros=(i * 7919) % 1000))
        if len(buf) >= batch:
            send(buf)
            sent += len(buf)
            buf = []
            if progress:
                progress(sent)
    if buf:
        send(buf)
        sent += len(buf)
        if progress:
            progress(sent)
    return sent


def insert_events(client, database: str, events: Iterator[dict], batch: int = 100_000,
                  progress: Callable[[int], None] | None = None) -> int:
    """Insert the events directly, `batch` rows per JSONEachRow insert."""
    sent, buf = 0, []
    for ev in events:
        buf.append(to_row(ev))
        if len(buf) >= batch:
            insert_json_rows(client, database, b"".join(buf))
            sent += len(buf)
            buf = []
            if progress:
                progress(sent)
    if buf:
        insert_json_rows(client, database, b"".join(buf))
        sent += len(buf)
        if progress:
            progress(sent)
    return sent
