"""The HTTP layer of `cvat-analytics serve`: the stdlib's ThreadingHTTPServer with
keep-alive, a graceful stop and request framing (the answers: responses.py).

What a request means is not decided here: every request goes to the server's route
table (routes.py), which answers with a Response. One process owns the chdb path
(see docs/architecture.md); requests run in threads.

Framing. A body no handler read would otherwise become the next request on a
kept-alive connection, so after every answer the unread rest of a Content-Length
body is read and dropped (up to embedded.max_body_bytes), or the connection is
closed. A chunked body is read by `read_body`, with the same limit; Content-Length
together with Transfer-Encoding is refused and the connection closed (the two
framings disagree: request smuggling). gzip and deflate bodies are inflated, the
limit applying to the inflated size. Error answers never quote the request: what
looks like a request line may be someone's body.
"""
from __future__ import annotations

import os
import re
import zlib
import shutil
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .access import ANONYMOUS, LOCAL, Principal
from .logs import ACCESS, SERVICE, loggable_path
from .overflow import Overflow
from .responses import Response, StreamCut, encode_head, json_response


if TYPE_CHECKING:
    from .routes import Routes


class BodyError(Exception):
    """The body cannot be read as sent: `status` and a message that quotes nothing of it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")
# Answers to requests the stdlib refuses before any route sees them (bad request line,
# unknown method, header too long): fixed texts, never the request's own.
_REFUSED = {400: "bad request: the request line or a header cannot be parsed",
            414: "the request line is too long", 431: "the request's headers are too large",
            501: "this method is not supported", 505: "this HTTP version is not supported"}


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
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            # A response is one write; without this it would wait for the client's delayed ACK.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def respond(self) -> None:
        """Every request: framing checked, then the route table's answer (routes.Routes.answer),
        sent, the unread body drained, one access line logged."""
        started = time.monotonic()
        # Every answer carries it; an error's stack trace in the log carries it too.
        self.request_id = uuid.uuid4().hex[:16]
        self.principal, self.route = ANONYMOUS, "unmatched"  # until the route table says
        path = urlsplit(self.path).path
        refused = self._check_framing()
        if refused is not None:
            response = refused
        else:
            try:
                response = self.server.routes.answer(self, path)
            except Exception:  # a bug or a ClickHouse failure: log it, keep serving
                SERVICE.error("%s %s failed", self.command, loggable_path(self.path), exc_info=True,
                              extra={"request_id": self.request_id})
                response = json_response(500, {"error": "internal error; the service log has the details "
                                                        f"(request id {self.request_id})"})
        response.headers["X-Request-Id"] = self.request_id
        if self.server.stopping.is_set() or not self._can_drain(response.status):
            self.close_connection = True
        try:
            self.send(response)
            if not self.close_connection:
                self._drain()
        finally:  # a request whose answer could not be sent still gets its line and its count
            self._log(response.status, response.events, started)

    def _log(self, status: int, events: int, started: float, request_line: bool = True) -> None:
        """The access line and the request counters: nothing of the body, the headers or query values."""
        method, path = (self.command, loggable_path(self.path)) if request_line else ("-", "-")
        metrics = self.server.routes.metrics
        if metrics is not None:
            metrics.observe(self.route, method, status, events)
        ACCESS.info("request", extra={
            "client": self.client_address[0] if self.client_address else "-",
            "token": self.principal.name, "method": method, "path": path,
            "status": status, "events": events, "ms": round((time.monotonic() - started) * 1000),
            "request_id": self.request_id})

    # -- the body ----------------------------------------------------------------
    def _check_framing(self) -> Response | None:
        """How the body is delimited; a 400/501 (connection closed) when that is unclear."""
        self._unread = 0  # bytes of a Content-Length body not read yet
        self._chunked = self._body_done = False
        lengths = self.headers.get_all("Content-Length") or []
        encoding = self.headers.get_all("Transfer-Encoding") or []
        if lengths and encoding:
            self.close_connection = True
            return json_response(400, {"error": "Content-Length and Transfer-Encoding together: send one"})
        if encoding:
            if [e.strip().lower() for e in ",".join(encoding).split(",")] != ["chunked"]:
                self.close_connection = True
                return json_response(501, {"error": "the only Transfer-Encoding accepted is chunked"})
            self._chunked = True
            return None
        if lengths:
            if len(set(lengths)) != 1 or not lengths[0].strip().isdigit() or not lengths[0].strip().isascii():
                self.close_connection = True
                return json_response(400, {"error": "bad Content-Length: expected one non-negative integer"})
            self._unread = int(lengths[0])
        return None

    def has_body(self) -> bool:
        return self._chunked or "Content-Length" in self.headers

    def read_body(self) -> bytes:
        """The request's body, inflated when it is gzip or deflate, at most
        embedded.max_body_bytes (raw and inflated); BodyError otherwise."""
        limit = self.server.max_body_bytes
        if self._body_done:
            raise BodyError(500, "the body was read already")
        if not self.has_body():
            raise BodyError(411, "Content-Length is required (or Transfer-Encoding: chunked)")
        if not self._chunked and self._unread > limit:
            self.close_connection = True  # refused before reading: the body is never read
            raise BodyError(413, f"the body is {self._unread} bytes; at most {limit} are accepted "
                                 "(embedded.max_body_bytes): send smaller batches")
        try:
            raw = self._read_chunked(limit) if self._chunked else self._read_exactly(self._unread)
        except BodyError:
            self.close_connection = True  # where the next request starts is unknown now
            raise
        finally:
            self._body_done, self._unread = True, 0
        return self._inflate(raw, limit)

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise BodyError(400, f"the body ended after {len(data)} of {size} bytes")
        return data

    def _read_chunked(self, limit: int) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024)
            size_text = line.split(b";", 1)[0].strip()  # a chunk extension is ignored
            if not line.endswith(b"\n") or not _CHUNK_SIZE.fullmatch(size_text):
                raise BodyError(400, "bad chunked body: a chunk size line cannot be parsed")
            size = int(size_text, 16)
            if size == 0:
                for _ in range(100):  # trailer fields, up to the empty line
                    if self.rfile.readline(8192).strip() == b"":
                        return bytes(body)
                raise BodyError(400, "bad chunked body: too many trailer fields")
            if len(body) + size > limit:
                raise BodyError(413, f"the body is more than {limit} bytes; at most {limit} are accepted "
                                     "(embedded.max_body_bytes): send smaller batches")
            body += self._read_exactly(size)
            if self.rfile.readline(3).strip() != b"":
                raise BodyError(400, "bad chunked body: a chunk is longer than its size")

    def _inflate(self, raw: bytes, limit: int) -> bytes:
        coding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if coding in ("", "identity"):
            return raw
        if coding in ("gzip", "x-gzip"):
            wbits = 31
        elif coding == "deflate":  # zlib-wrapped as RFC 9110 says; some clients send it raw
            wbits = 15 if raw[:2] and len(raw) >= 2 and (raw[0] * 256 + raw[1]) % 31 == 0 else -15
        else:
            raise BodyError(415, "the only Content-Encodings accepted are gzip and deflate")
        inflater = zlib.decompressobj(wbits)
        try:
            body = inflater.decompress(raw, limit + 1)
        except zlib.error:
            raise BodyError(400, f"the body is not valid {coding} data") from None
        if len(body) > limit:
            raise BodyError(413, f"the body inflates to more than {limit} bytes; at most {limit} are "
                                 "accepted (embedded.max_body_bytes): send smaller batches")
        if not inflater.eof:
            raise BodyError(400, f"the {coding} data ends early")
        return body

    def _can_drain(self, status: int) -> bool:
        """Whether the connection can stay open: the rest of the body, if any, is read
        after the answer. An unread chunked body, one over the limit, or a caller that
        was refused (401/403: not worth reading for) closes it."""
        if self._body_done or not self.has_body():
            return True
        if self._chunked or status in (401, 403):
            return False
        return self._unread <= self.server.max_body_bytes

    def _drain(self) -> None:
        while self._unread > 0:
            data = self.rfile.read(min(self._unread, 1 << 16))
            if not data:
                self.close_connection = True
                return
            self._unread -= len(data)

    def send_error(self, code, message=None, explain=None):
        """The stdlib's refusals (before a route runs), as JSON that quotes nothing of the request."""
        self.close_connection = True
        started = time.monotonic()
        self.request_id = uuid.uuid4().hex[:16]
        self.principal, self.route = ANONYMOUS, "unmatched"
        response = json_response(code, {"error": _REFUSED.get(code, "the request cannot be served")},
                                 **{"X-Request-Id": self.request_id})
        self.send(response)
        # What looks like a request line may be someone's body: neither method nor path is logged.
        self._log(code, 0, started, request_line=False)

    # Every method goes to the route table, which answers 405 where a path has no such method.
    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = respond

    def send(self, response: Response) -> None:
        """The status line and headers, and a bytes body with them in one write: with
        TCP_NODELAY set (setup), a response is on the wire at once. A Stream (responses.py)
        goes chunked; when it is cut, the terminating chunk is left out and the connection closed."""
        body = response.body
        streamed = not isinstance(body, bytes) and not hasattr(body, "fileno")
        length = None if streamed else len(body) if isinstance(body, bytes) else os.fstat(body.fileno()).st_size
        head = encode_head(response, length, self.close_connection, self.date_time_string())
        try:
            if self.command == "HEAD":
                self.wfile.write(head)
            elif isinstance(body, bytes):
                self.wfile.write(head + body)
            elif streamed:
                self.wfile.write(head)
                try:
                    for piece in body:
                        if piece:
                            self.wfile.write(b"%x\r\n" % len(piece))
                            self.wfile.write(piece)
                            self.wfile.write(b"\r\n")
                except (StreamCut, OSError):  # cut, or the client left or stopped reading (timeout)
                    self.close_connection = True
                else:
                    self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(head)
                shutil.copyfileobj(body, self.wfile, 1 << 20)
        finally:
            if not isinstance(body, bytes):
                body.close()

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass  # respond() logs one line per request; errors before it are not worth a line


class EventServer(ThreadingHTTPServer):
    """The HTTP server with its route table, its limits and a graceful stop. It serves every
    route of `serve` (events are only POST /): the name is older than the other routes."""

    daemon_threads = False  # server_close() waits for requests in flight
    block_on_close = True

    def __init__(self, routes: "Routes", embedded: dict, host: str, port: int):
        self.routes = routes
        self.max_body_bytes = embedded["max_body_bytes"]
        self.request_queue_size = embedded["listen_backlog"]  # listen()'s backlog
        self.max_connections = embedded["max_connections"]
        self._serving = 0  # connections with a thread of their own

        self.overflow = Overflow(self)
        self.stopping = threading.Event()
        self._connections: dict[socket.socket, bool] = {}  # open connection -> busy
        self._lock = threading.Lock()
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), RequestHandler)

    def serve_forever(self, poll_interval: float = 0.05) -> None:
        """socketserver's loop, looking for a stop every 50 ms, not its 500: stop() waits for
        the look (a stop took 0.2-0.5 s; make test stops a few hundred servers)."""
        super().serve_forever(poll_interval)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def process_request(self, request, client_address):
        """A thread for the connection, or, at max_connections, the overflow's quick answer."""
        with self._lock:
            full = self._serving >= self.max_connections
            if not full:
                self._serving += 1
        if full:
            self.overflow.take(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done_serving()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done_serving()

    def _done_serving(self) -> None:
        with self._lock:
            self._serving -= 1

    def brief_health(self) -> Response:
        """GET /health as a caller without a token sees it (the overflow's answer)."""
        route = self.routes.find("GET", "/health")
        return route.handler(None) if route else json_response(404, {"error": "no such path: /health"})

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
        self.overflow.stop()
        self.server_close()  # joins the request threads


def _shut_reading(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RD)  # the handler's next read sees the end and the thread ends
    except OSError:
        pass
