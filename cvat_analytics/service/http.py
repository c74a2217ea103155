"""The HTTP layer of `cvat-analytics serve`: the stdlib's ThreadingHTTPServer with
keep-alive, a graceful stop, and one Response type.

What a request means is not decided here: every request goes to the server's route
table (routes.py), which answers with a Response. One process owns the chdb path
(see docs/architecture.md); requests run in threads.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

from ..errors import first_line
from .access import LOCAL, Principal

if TYPE_CHECKING:
    from .routes import Routes


@dataclass
class Response:
    status: int
    body: bytes | BinaryIO = b""  # a file is streamed (its size from fstat), then closed
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    events: int = 0  # for the access log


def json_response(status: int, data: dict, events: int = 0, **headers: str) -> Response:
    return Response(status, json.dumps(data).encode() + b"\n", headers=headers, events=events)


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: CVAT's handler posts every 2 s
    timeout = 120  # seconds a connection may sit idle or stall mid-body before it is closed
    server: "EventServer"
    # Who is asking: set by the route table's access check before any handler runs.
    principal: Principal = LOCAL

    def handle_one_request(self):
        self.server.set_busy(self.connection, False)
        super().handle_one_request()

    def parse_request(self) -> bool:
        # The request line has arrived: from here on the connection is busy and a
        # graceful shutdown lets the request finish.
        self.server.set_busy(self.connection, True)
        return super().parse_request()

    def setup(self):
        super().setup()
        self.server.track(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def respond(self) -> None:
        started = time.monotonic()
        path = urlsplit(self.path).path
        try:
            response = self.server.routes.answer(self, path)
        except Exception as exc:  # a bug or a ClickHouse failure: say so, keep serving
            response = json_response(500, {"error": first_line(exc)})
        if self.server.stopping.is_set():
            self.close_connection = True
        self.send(response)
        elapsed = (time.monotonic() - started) * 1000
        print(f"{self.command} {path} {response.status} {response.events} {elapsed:.0f}ms",
              file=sys.stderr, flush=True)

    # Every method goes to the route table, which answers 405 where a path has no such method.
    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = respond

    def send(self, response: Response) -> None:
        body = response.body
        headers = {"Content-Type": response.content_type, **response.headers}
        headers["Content-Length"] = str(len(body) if isinstance(body, bytes) else os.fstat(body.fileno()).st_size)
        self.send_response(response.status)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            if self.command == "HEAD":
                pass
            elif isinstance(body, bytes):
                self.wfile.write(body)
            else:
                shutil.copyfileobj(body, self.wfile, 1 << 20)
        finally:
            if not isinstance(body, bytes):
                body.close()

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass  # respond() logs one line per request; errors before it are not worth a line


class EventServer(ThreadingHTTPServer):
    """The HTTP server with its route table, its limits and a graceful stop."""

    daemon_threads = False  # server_close() waits for requests in flight
    block_on_close = True

    def __init__(self, routes: "Routes", embedded: dict, host: str, port: int):
        self.routes = routes
        self.max_body_bytes = embedded["max_body_bytes"]
        self.stopping = threading.Event()
        self._connections: dict[socket.socket, bool] = {}  # open connection -> busy
        self._lock = threading.Lock()
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), RequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections[conn] = False

    def untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.pop(conn, None)

    def set_busy(self, conn: socket.socket, busy: bool) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections[conn] = busy
            stop_now = not busy and self.stopping.is_set()
        if stop_now:  # a keep-alive connection coming back for more after the stop
            _shut_reading(conn)

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish, close idle keep-alive connections."""
        self.stopping.set()
        self.shutdown()
        with self._lock:
            idle = [conn for conn, busy in self._connections.items() if not busy]
        for conn in idle:
            _shut_reading(conn)
        self.server_close()  # joins the request threads


def _shut_reading(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RD)  # the handler's next read sees the end and the thread ends
    except OSError:
        pass
