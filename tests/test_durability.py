"""Nothing acknowledged is lost, nothing is counted twice: real `serve` processes,
concurrent senders, kill -9 at random moments, restarts, retries.

The figures (events acknowledged, found, kills, bodies retried) are printed with the
test output.
"""
from __future__ import annotations

import http.client
import itertools
import json
import random
import socket
import subprocess
import threading
import time

import pytest

from tests.conftest import write_spec
from cvat_analytics.bench.service import ServeProcess
from tests.test_serve import CLI, cvat_batch

pytestmark = pytest.mark.clickhouse

SENDERS = 4
KILLS = 4
BATCH = 25


def query_ids(dsn: str, spec_path) -> list[int]:
    """Every stored obj_id, read by another process once serve has stopped."""
    done = subprocess.run([str(CLI), "query", "--dsn", dsn, "--spec", str(spec_path), "--format", "csv",
                           "SELECT obj_id FROM cvat.events"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [int(line) for line in done.stdout.split()[1:]]


def post(url: str, body: bytes, headers: dict | None = None, timeout: float = 10) -> int:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", "/", body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


class Senders:
    """Threads posting batches of events with unique obj_ids; a batch that got no
    answer (the service died) is re-sent, byte for byte, until it is acknowledged,
    as Vector and CVAT's logging client do."""

    def __init__(self):
        self.url: str | None = None
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        self.acknowledged: set[int] = set()
        self.sent_ids: set[int] = set()
        self.retries = 0
        self.finish = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(SENDERS)]

    def batch(self) -> tuple[bytes, list[int]]:
        with self.lock:
            ids = [next(self.ids) for _ in range(BATCH)]
            self.sent_ids.update(ids)
        events = cvat_batch("durability", BATCH)
        for event, obj_id in zip(events, ids):
            event["obj_id"] = obj_id
        return json.dumps(events).encode(), ids

    def run(self) -> None:
        while not self.finish.is_set():
            body, ids = self.batch()
            attempts = 0
            while True:  # until this body is acknowledged
                url = self.url
                status = None
                if url is not None:
                    try:
                        status = post(url, body)
                    except (OSError, http.client.HTTPException):
                        pass
                if status == 200:
                    with self.lock:
                        self.acknowledged.update(ids)
                        self.retries += attempts > 0
                    break
                assert status is None, f"unexpected answer {status}"
                attempts += 1
                time.sleep(0.05)


@pytest.mark.slow
def test_every_acknowledged_event_survives_kill_9_and_retries_count_once(tmp_path, capsys):
    _, spec_path = write_spec(tmp_path)
    dsn = f"chdb://{tmp_path / 'data'}"
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    senders = Senders()
    for thread in senders.threads:
        thread.start()
    kills = 0
    for _ in range(KILLS):
        serve = ServeProcess(dsn, spec_path, tmp_path / "serve.log")  # a log of ours: a killed serve's stop() never runs
        senders.url = serve.url
        time.sleep(rng.uniform(0.3, 2.0))
        serve.proc.kill()  # SIGKILL: no clean-up of any kind
        senders.url = None
        serve.proc.wait(30)
        kills += 1
    serve = ServeProcess(dsn, spec_path)  # the last start: pending batches get through
    senders.url = serve.url
    senders.finish.set()
    for thread in senders.threads:
        thread.join(60)
    assert not any(t.is_alive() for t in senders.threads)
    log = serve.stop()
    assert serve.proc.returncode == 0, log

    stored = query_ids(dsn, spec_path)
    found = set(stored)
    with capsys.disabled():
        print(f"\n[durability] seed {seed}: {kills} kill -9, {len(senders.acknowledged)} events acknowledged, "
              f"{len(found & senders.acknowledged)} of them found, {len(stored)} rows stored, "
              f"{len(stored) - len(found)} duplicates, {senders.retries} bodies re-sent after a kill")
    assert senders.acknowledged <= found, f"lost: {sorted(senders.acknowledged - found)[:20]}"
    assert len(stored) == len(found), "a re-sent body was stored twice"
    assert found == senders.sent_ids  # every batch was eventually acknowledged, nothing else is there


def test_a_retry_after_a_client_timeout_is_stored_once(tmp_path, capsys):
    """The client sends, gives up before reading the answer, and sends the same bytes
    again (Vector's and CVAT's retry); an Idempotency-Key makes even a re-serialised
    body count once; the same events in another order are another batch."""
    _, spec_path = write_spec(tmp_path)
    dsn = f"chdb://{tmp_path / 'data'}"
    serve = ServeProcess(dsn, spec_path)
    try:
        host, port = serve.url.removeprefix("http://").rsplit(":", 1)
        events = cvat_batch("timeout", 5)
        for i, event in enumerate(events):
            event["obj_id"] = i
        body = json.dumps(events).encode()
        for _ in range(3):  # send, close without reading the answer
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert post(serve.url, body) == 200  # the retry that finally reads its answer

        keyed = [json.dumps(events, indent=indent).encode() for indent in (None, 1, 2)]
        for variant in keyed:  # different bytes, the same key
            assert post(serve.url, variant, {"Idempotency-Key": "batch-42"}) == 200
        assert post(serve.url, json.dumps(events[::-1]).encode()) == 200  # another batch
    finally:
        log = serve.stop()
    stored = query_ids(dsn, spec_path)
    with capsys.disabled():
        print(f"\n[retries] 4 identical bodies (3 never read) + 3 bodies with one Idempotency-Key + "
              f"1 reordered body: {len(stored)} rows stored for 5 distinct events x 3 batches")
    assert "POST / 200 5" in log
    assert sorted(stored) == sorted(list(range(5)) * 3)
