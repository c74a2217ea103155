"""Connection limits on raw sockets: a listen backlog that takes a burst, a cap on
the connections served by threads, and beyond the cap quick answers (/health still
works, anything else 503) instead of hangs."""
from __future__ import annotations

import selectors
import socket
import time

import pytest

pytestmark = pytest.mark.clickhouse

CAP = 16
CONNECTIONS = 1000


@pytest.fixture
def srv(store, make_served):
    return make_served({**store.spec, "embedded": {**store.spec["embedded"], "max_connections": CAP,
                                                   "listen_backlog": 1024}})


def get(srv, path: str, timeout: float = 5) -> tuple[int, float]:
    started = time.monotonic()
    with socket.create_connection(srv.server_address[:2], timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return int(received.split(b" ", 2)[1]), time.monotonic() - started


def test_1000_connections_at_once_are_all_answered_quickly_and_health_keeps_answering(srv):
    started = time.monotonic()
    selector = selectors.DefaultSelector()
    sockets = []
    for _ in range(CONNECTIONS):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(srv.server_address[:2])
        sockets.append(sock)
    try:
        # Every connection is open and idle: CAP of them hold the server's threads.
        time.sleep(0.3)
        status, took = get(srv, "/health")
        assert status == 200 and took < 1.5, (status, took)
        for sock in sockets:
            selector.register(sock, selectors.EVENT_WRITE)
        received = {sock: b"" for sock in sockets}
        open_ = set(sockets)
        deadline = started + 8
        while open_ and time.monotonic() < deadline:
            for key, events in selector.select(timeout=0.5):
                sock = key.fileobj
                if events & selectors.EVENT_WRITE:
                    try:
                        sock.send(b"GET /nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    except OSError:
                        pass  # answered (503) and closed before the request went out
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                received[sock] += chunk
                if not chunk:
                    selector.unregister(sock)
                    open_.discard(sock)
        elapsed = time.monotonic() - started
        statuses = [data.split(b" ", 2)[1] if data.startswith(b"HTTP/1.1 ") else b"none"
                    for data in received.values()]
    finally:
        for sock in sockets:
            sock.close()
    assert not open_, f"{len(open_)} connections never finished"
    assert set(statuses) <= {b"404", b"503"}, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(b"404") >= CAP  # the ones with a thread were served
    assert elapsed < 5, elapsed
    assert get(srv, "/health")[0] == 200


def test_idle_connections_beyond_the_cap_cost_no_thread_and_are_closed(srv):
    idle = [socket.create_connection(srv.server_address[:2], timeout=5) for _ in range(CAP + 20)]
    try:
        time.sleep(0.3)
        assert get(srv, "/health")[0] == 200
        assert get(srv, "/nope")[0] == 503  # no thread free: refused at once, not queued
        # An overflow connection that sends nothing is answered 503 and closed within seconds.
        idle[-1].settimeout(4)
        assert idle[-1].recv(65536).startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in idle:
            sock.close()
