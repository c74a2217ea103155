"""HTTP framing on raw sockets: a body nobody reads cannot become the next request,
ambiguous framing is refused with the connection closed, chunked and compressed bodies
are read within the size limit, and nothing from a body is echoed or logged."""
from __future__ import annotations

import gzip
import http.client
import json
import socket
import statistics
import time
import zlib

import pytest

from tests.test_serve import count, cvat_batch

pytestmark = pytest.mark.clickhouse

SECRET = "hunter2-very-secret"
LOGIN = json.dumps({"username": "ann", "password": SECRET}).encode()
MAX_BODY = 64 * 1024


@pytest.fixture
def srv(store, make_served):
    return make_served({**store.spec, "embedded": {**store.spec["embedded"], "max_body_bytes": MAX_BODY}})


def exchange(srv, data: bytes, timeout: float = 5) -> list[tuple[int, dict, bytes]]:
    """Send `data` on one connection, end the sending side, and parse every response
    the server wrote before it closed: [(status, headers, body)]."""
    with socket.create_connection(srv.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    responses = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        size = int(headers.get("content-length", 0))
        responses.append((int(status_line.split()[1]), headers, rest[:size]))
        received = rest[size:]
    return responses


def req(method: str, path: str, body: bytes = b"", headers: dict | None = None, length: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes, size: int = 1000) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def test_a_body_no_route_reads_is_consumed_and_the_next_request_is_served(srv, capsys):
    got = exchange(srv, req("POST", "/api/auth/login", LOGIN) + req("GET", "/health"))
    assert [status for status, _, _ in got] == [404, 200]
    assert json.loads(got[1][2])["status"] == "ok"
    assert SECRET not in capsys.readouterr().err


def test_a_too_short_content_length_cannot_poison_the_next_request(srv, capsys):
    # The declared length stops inside the JSON: the rest runs into the next request line.
    got = exchange(srv, req("POST", "/api/auth/login", LOGIN, {"X-Pad": "1"}, length=False)
                   .replace(b"X-Pad: 1", b"Content-Length: 10") + req("GET", "/health"))
    assert got[0][0] == 404
    assert len(got) == 2 and got[1][0] in (400, 501)
    assert got[1][1]["connection"] == "close"
    assert all(SECRET.encode() not in body and b"username" not in body for _, _, body in got)
    assert SECRET not in capsys.readouterr().err


def test_content_length_with_transfer_encoding_is_400_and_closes(srv, store):
    body = json.dumps(cvat_batch("smuggle", 1)).encode()
    data = req("POST", "/", chunked(body), {"Transfer-Encoding": "chunked"}).replace(
        b"Content-Length: %d" % len(chunked(body)), b"Content-Length: 4")
    got = exchange(srv, data + req("GET", "/health"))
    assert len(got) == 1 and got[0][0] == 400 and got[0][1]["connection"] == "close"
    assert count(store) == 0


def test_a_chunked_body_is_read_and_one_over_the_limit_is_413(srv, store):
    body = json.dumps(cvat_batch("chunks", 5)).encode()
    got = exchange(srv, req("POST", "/", chunked(body, 97), {"Transfer-Encoding": "chunked"}, length=False)
                   + req("GET", "/health"))
    assert [(s, json.loads(b)) for s, _, b in got][0] == (200, {"stored": 5})
    assert got[1][0] == 200 and count(store, "chunks") == 5
    huge = chunked(b"[" + b" " * (MAX_BODY + 10) + b"]", 8192)
    got = exchange(srv, req("POST", "/", huge, {"Transfer-Encoding": "chunked"}, length=False) + req("GET", "/health"))
    assert len(got) == 1 and got[0][0] == 413 and got[0][1]["connection"] == "close"


def test_bad_chunk_framing_is_400_and_closes(srv):
    got = exchange(srv, req("POST", "/", b"zz\r\n[]\r\n0\r\n\r\n", {"Transfer-Encoding": "chunked"}, length=False)
                   + req("GET", "/health"))
    assert len(got) == 1 and got[0][0] == 400 and got[0][1]["connection"] == "close"
    got = exchange(srv, req("POST", "/", b"", {"Transfer-Encoding": "gzip, chunked"}, length=False))
    assert got[0][0] == 501


def test_an_unread_chunked_body_closes_the_connection(srv):
    got = exchange(srv, req("POST", "/nope", chunked(LOGIN), {"Transfer-Encoding": "chunked"}, length=False)
                   + req("GET", "/health"))
    assert len(got) == 1 and got[0][0] == 404 and got[0][1]["connection"] == "close"


@pytest.mark.parametrize("encoding, compress", [
    ("gzip", gzip.compress), ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some clients send it
])
def test_compressed_bodies_are_inflated(srv, store, encoding, compress):
    body = compress(json.dumps(cvat_batch(encoding, 4)).encode())
    got = exchange(srv, req("POST", "/", body, {"Content-Encoding": encoding, "Content-Type": "application/json"}))
    assert (got[0][0], json.loads(got[0][2])) == (200, {"stored": 4})
    assert count(store, encoding) == 4


def test_a_zip_bomb_is_413_and_broken_gzip_400(srv, store):
    bomb = gzip.compress(b"[" + b" " * (50 * MAX_BODY) + b"]")
    assert len(bomb) < MAX_BODY
    got = exchange(srv, req("POST", "/", bomb, {"Content-Encoding": "gzip"}) + req("GET", "/health"))
    assert got[0][0] == 413 and "inflates to more than" in json.loads(got[0][2])["error"]
    assert got[1][0] == 200  # the whole body was read: the connection goes on
    got = exchange(srv, req("POST", "/", b"\x1f\x8bnot gzip", {"Content-Encoding": "gzip"}))
    assert got[0][0] == 400
    got = exchange(srv, req("POST", "/", b"[]", {"Content-Encoding": "br"}))
    assert got[0][0] == 415
    assert count(store) == 0


def test_a_garbage_request_line_is_answered_without_quoting_it(srv, capsys):
    got = exchange(srv, b'{"password": "' + SECRET.encode() + b'"}GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n')
    assert len(got) == 1 and got[0][0] in (400, 501) and SECRET.encode() not in got[0][2]
    got = exchange(srv, b"BREW /pot HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert got[0][0] == 501 and b"BREW" not in got[0][2]
    assert SECRET not in capsys.readouterr().err


def test_a_body_on_a_get_is_consumed_and_the_connection_kept(srv):
    got = exchange(srv, req("GET", "/health", b"x" * 5000) + req("GET", "/health"))
    assert [status for status, _, _ in got] == [200, 200]


def test_responses_come_at_once_on_a_kept_alive_connection_and_name_no_versions(srv):
    """Each response is one write with TCP_NODELAY: a kept-alive round trip takes well under
    the ~40 ms a client's delayed ACK costs when headers and body go in two writes."""
    with socket.create_connection(srv.server_address[:2], timeout=5) as sock:
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            sock.sendall(req("GET", "/nope"))
            received = b""
            while not (received.endswith(b"}\n") and b"\r\n\r\n" in received):
                received += sock.recv(65536)
            timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.025, timings
    assert received.startswith(b"HTTP/1.1 404 Not Found\r\n")
    server_header = next(line for line in received.split(b"\r\n") if line.lower().startswith(b"server:"))
    assert b"Python" not in server_header and b"/" not in server_header


def test_head_answers_like_get_without_a_body_and_starts_nothing(make_served):
    srv = make_served(export=True, dashboards=True)
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    for path in ("/health", "/dashboards", "/api/requests/unknown-id"):
        conn.request("GET", path)
        get = conn.getresponse()
        get_body = get.read()
        conn.request("HEAD", path)  # the same kept-alive connection: a stray body would show
        head = conn.getresponse()
        assert (head.status, head.read()) == (get.status, b""), path
        assert head.getheader("Content-Length") == str(len(get_body)), path
        assert head.getheader("Content-Type") == get.getheader("Content-Type"), path
    for path in ("/api/events", "/api/events?action=download&query_id=x", "/api/events/download?rq_id=x"):
        conn.request("HEAD", path)
        head = conn.getresponse()
        assert (head.status, head.read()) == (405, b""), path
        assert "HEAD" not in head.getheader("Allow") and "GET" in head.getheader("Allow")
    conn.close()
    time.sleep(0.3)  # an export started by mistake would have written its file by now
    assert list(srv.export_directory.iterdir()) == []
