"""`cvat-analytics serve`: the embedded service over the stdlib's ThreadingHTTPServer.

One process owns the chdb path (DESIGN.md §7); requests run in threads, which share
one clickhouse-connect client (its chdb backend serialises calls on the handle).

Routes live in a small table, (method, path) -> handler(request) -> Response, so
other parts (the CSV export at /api/events, the dashboards) add theirs with
`server.add_route(...)` or by adding to ROUTES below.

POST /  takes what Vector's http_server takes from CVAT's server (a JSON array of
events; also one object, or NDJSON). A request is all or nothing: every event is
validated first, then all rows go in one INSERT, and 200 is sent only after the
INSERT returned (a returned chdb INSERT is durable). The INSERT carries the body's
sha256 as deduplication token, so a byte-identical retry is stored once.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import shutil
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO, Callable
from urllib.parse import parse_qs, urlsplit

from . import export, working_time
from .access import (LOCAL, AccessError, Forbidden, Principal, Token, apply_forced_filters,
                     authenticate, load_tokens, required_permission)
from .events import EventContract, EventError
from .store import chdb_path, connect, insert_json_rows, open_handle, redact

# Content types a JSON body may come with; none at all is accepted too (Vector does not look).
JSON_TYPES = ("application/json", "application/x-ndjson", "application/ndjson",
              "application/jsonlines", "application/x-jsonlines", "text/plain")


@dataclass
class Response:
    status: int
    body: bytes | BinaryIO = b""  # a file is streamed, then closed
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    events: int = 0  # for the access log


def json_response(status: int, data: dict, events: int = 0, **headers: str) -> Response:
    return Response(status, json.dumps(data).encode() + b"\n", headers=headers, events=events)


class BadBody(Exception):
    """The body is not JSON events; `index` says which event when one is at fault."""

    def __init__(self, message: str, index: int | None = None, field: str | None = None):
        super().__init__(message)
        self.index = index
        self.field = field


def parse_events(body: bytes) -> list:
    """A JSON array, a single JSON value, or NDJSON -> the list of incoming events."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadBody(f"the body is not UTF-8 text ({exc.reason})") from None
    stripped = text.strip()
    if not stripped:
        raise BadBody("the body is empty; expected a JSON array of events")
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as exc:
        if stripped[0] != "{":
            raise BadBody(f"the body is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
        return _parse_ndjson(stripped)
    except (RecursionError, ValueError) as exc:  # nesting deeper than the parser's stack; a 5000-digit number
        raise BadBody(f"the body is not acceptable JSON: {_json_limit(exc)}") from None
    return value if isinstance(value, list) else [value]


def _json_limit(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "it is nested too deeply (events are flat objects)"
    return _first_line(exc)


def _parse_ndjson(text: str) -> list:
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise BadBody(f"line {number} is not valid JSON: {exc.msg}", index=len(events)) from None
        except (RecursionError, ValueError) as exc:
            raise BadBody(f"line {number} is not acceptable JSON: {_json_limit(exc)}", index=len(events)) from None
    return events


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: CVAT's handler posts every 2 s
    timeout = 120  # seconds a connection may sit idle or stall mid-body before it is closed
    server: "EventServer"
    # Who is asking (set by dispatch before any handler runs); handlers that read
    # events must apply `principal.forced_filters` (see access.py).
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

    def __getattr__(self, name: str):
        # do_GET, do_POST, ...: every method goes through the route table.
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def dispatch(self) -> None:
        started = time.monotonic()
        path = urlsplit(self.path).path
        handler = self.server.route(self.command, path)
        refused = self.server.check_access(self, path)
        if refused is not None:
            response = refused
        elif handler is not None:
            try:
                response = handler(self)
            except Exception as exc:  # a bug or a ClickHouse failure: say so, keep serving
                response = json_response(500, {"error": _first_line(exc)})
        elif any(p == path for _, p in self.server.routes):
            allowed = ", ".join(sorted(m for m, p in self.server.routes if p == path))
            response = json_response(405, {"error": f"{self.command} not allowed on {path}"}, Allow=allowed)
        else:
            response = json_response(404, {"error": f"no such path: {path}"})
        if self.server.stopping.is_set():
            self.close_connection = True
        self.send(response)
        elapsed = (time.monotonic() - started) * 1000
        print(f"{self.command} {path} {response.status} {response.events} {elapsed:.0f}ms",
              file=sys.stderr, flush=True)

    def send(self, response: Response) -> None:
        body = response.body
        headers = {"Content-Type": response.content_type, **response.headers}
        if isinstance(body, bytes):
            headers["Content-Length"] = str(len(body))
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
        pass  # dispatch() logs one line per request; errors before it are not worth a line


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def ingest(request: RequestHandler) -> Response:
    """POST /: validate every event, then store all of them in one INSERT."""
    server = request.server
    length = request.headers.get("Content-Length")
    if length is None:
        request.close_connection = True  # a body we will not read may follow
        return json_response(411, {"error": "Content-Length is required"})
    try:
        size = int(length)
        if size < 0:
            raise ValueError
    except ValueError:
        request.close_connection = True
        return json_response(400, {"error": f"bad Content-Length: {length!r}"})
    if size > server.max_body_bytes:
        request.close_connection = True  # refused before reading: the body is never read
        return json_response(413, {"error": f"the body is {size} bytes; at most {server.max_body_bytes} "
                                            "are accepted (embedded.max_body_bytes): send smaller batches"})
    body = request.rfile.read(size)
    try:
        token = dedup_token(request, body)
    except BadBody as exc:
        return json_response(400, {"error": str(exc), "index": None})
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES and not content_type.endswith("+json"):
        return json_response(415, {"error": f"Content-Type {content_type} is not JSON; send application/json"})
    try:
        incoming = parse_events(body)
        rows = []
        for index, event in enumerate(incoming):
            try:
                rows.append(server.contract.to_line(server.contract.normalize(event, index)))
            except EventError as exc:
                raise BadBody(str(exc), index=exc.index, field=exc.field) from None
            except RecursionError:  # a value nested just below the parser's limit
                raise BadBody(f"index {index}: it is nested too deeply (events are flat objects)", index=index) from None
    except BadBody as exc:
        data = {"error": str(exc), "index": exc.index}
        if exc.field:
            data["field"] = exc.field
        return json_response(400, data)
    if rows:
        insert_json_rows(server.client, server.database, b"".join(rows), token=token)
    return json_response(200, {"stored": len(rows)}, events=len(rows))


IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces


def dedup_token(request: RequestHandler, body: bytes) -> str:
    """ClickHouse's insert_deduplication_token for this request.

    With an `Idempotency-Key` header: the key, namespaced by the caller, so any body
    sent with the same key is stored once (the first one). Without: the body's
    sha256, so a byte-identical retry is stored once. The two never collide."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return "body:" + hashlib.sha256(body).hexdigest()
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadBody("Idempotency-Key: expected 1-200 printable ASCII characters without spaces")
    return f"key:{request.principal.name}:{key}"


def health(request: RequestHandler) -> Response:
    """GET /health: the store answers; the event count is a metadata read for MergeTree."""
    server = request.server
    data = {"database": server.database, "dsn": redact(server.dsn)}
    try:
        count = server.client.command("SELECT count() FROM {db:Identifier}.events",
                                      parameters={"db": server.database})
    except Exception as exc:
        return json_response(503, {"status": "error", "error": _first_line(exc), **data})
    return json_response(200, {"status": "ok", **data, "events": int(count)})


Handler = Callable[[RequestHandler], Response]
ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/"): ingest,
    ("GET", "/health"): health,
}


class EventServer(ThreadingHTTPServer):
    """The HTTP server with its store, its route table and a graceful stop."""

    daemon_threads = False  # server_close() waits for requests in flight
    block_on_close = True

    def __init__(self, client, spec: dict, host: str, port: int, dsn: str = "",
                 tokens: list[Token] | None = None):
        self.client = client
        self.spec = spec
        self.dsn = dsn
        self.database = spec["clickhouse"]["database"]
        self.max_body_bytes = spec["embedded"]["max_body_bytes"]
        self.contract = EventContract(spec)
        # Without tokens in the spec every caller is LOCAL (serve then binds to loopback only).
        self.tokens = load_tokens(spec) if tokens is None else tokens
        self.routes: dict[tuple[str, str], Handler] = dict(ROUTES)
        self.stopping = threading.Event()
        self._connections: dict[socket.socket, bool] = {}  # open connection -> busy
        self._lock = threading.Lock()
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), RequestHandler)

    def check_access(self, request: RequestHandler, path: str) -> Response | None:
        """Set request.principal; a 401/403 answer when the caller may not use this route."""
        needed = required_permission(request.command, path)
        if not self.tokens or needed is None:
            request.principal = LOCAL
            return None
        principal = authenticate(self.tokens, request.headers.get("Authorization"))
        if principal is None:
            request.close_connection = True  # a body we will not read may follow
            return json_response(401, {"error": "authentication required: send Authorization: Bearer <token>"},
                                 **{"WWW-Authenticate": 'Bearer realm="cvat-analytics"'})
        request.principal = principal
        if needed not in principal.permissions:
            request.close_connection = True
            return json_response(403, {"error": f"token {principal.name!r} lacks the {needed!r} permission"})
        return None

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """A path ending in "/" (other than "/") also matches every path under it."""
        self.routes[(method.upper(), path)] = handler

    def route(self, method: str, path: str) -> Handler | None:
        handler = self.routes.get((method, path))
        if handler is None:
            for (m, prefix), h in self.routes.items():
                if m == method and prefix != "/" and prefix.endswith("/") and path.startswith(prefix):
                    return h
        return handler

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


def install_dashboards(server: EventServer, client_factory: Callable, spec: dict) -> None:
    """The dashboards as HTML pages: GET /dashboards (the list) and /dashboards/<uid>."""
    from . import dashboards

    pages = dashboards.Dashboards(client_factory, spec)
    headers = {
        "Cache-Control": "no-store",
        # Everything is inline and nothing is fetched: a page cannot load anything from elsewhere.
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                   "form-action 'self'; frame-ancestors 'self'",
        "X-Content-Type-Options": "nosniff",
    }

    def page(request: RequestHandler) -> Response:
        url = urlsplit(request.path)
        principal = getattr(request, "principal", None)  # set by the access check (access.py)
        forced = dict(principal.forced_filters) if principal else {}
        status, html = dashboards.handle(pages, url.path, parse_qs(url.query), forced)
        return Response(status, html.encode(), "text/html; charset=utf-8", dict(headers))

    server.add_route("GET", "/dashboards", page)
    server.add_route("GET", "/dashboards/", page)


def install_export(server: EventServer, jobs: "export.ExportJobs") -> None:
    """CVAT's CSV export on this server: the legacy GET /api/events and the newer flow."""

    def adapt(result: "export.Response") -> Response:
        headers = dict(result.headers)
        content_type = headers.pop("Content-Type", "application/json")
        if isinstance(result.body, bytes):
            headers.pop("Content-Length", None)  # send() sets it for bytes bodies
        return Response(result.status, result.body, content_type, headers)

    owners: dict[str, str] = {}  # export id -> name of the principal that started it

    def guarded(handle: Callable[[RequestHandler, dict], "export.Response"]) -> Handler:
        """The caller's forced filters set in the query (403 on a conflict), and an export
        visible only to the principal that started it (CVAT: only the owner downloads)."""
        def run(request: RequestHandler) -> Response:
            # Blank values are kept, so `?job_id=` answers 400 instead of being ignored.
            query = parse_qs(urlsplit(request.path).query, keep_blank_values=True)
            try:
                query = apply_forced_filters(request.principal, query)
            except Forbidden as exc:
                return json_response(403, {"detail": str(exc)})
            path_id = urlsplit(request.path).path.rsplit("/", 1)[-1]
            for job_id in (*query.get("query_id", []), *query.get("rq_id", []), path_id):
                if owners.get(job_id, request.principal.name) != request.principal.name:
                    return json_response(404, {"detail": f"unknown export {job_id[:64]!r}"})
            result = handle(request, query)
            if result.status == 202 and isinstance(result.body, bytes):
                started = json.loads(result.body)
                job_id = started.get("rq_id") or started.get("query_id")
                if job_id:
                    owners.setdefault(job_id, request.principal.name)
            return adapt(result)
        return run

    legacy = guarded(lambda r, q: export.handle_legacy_get(jobs, q))
    server.add_route("GET", "/api/events", legacy)
    server.add_route("HEAD", "/api/events", legacy)
    server.add_route("POST", "/api/events/export", guarded(lambda r, q: export.handle_export_post(jobs, q)))
    server.add_route("GET", "/api/events/download", guarded(lambda r, q: export.handle_download(jobs, q)))
    server.add_route("GET", "/api/requests/", guarded(lambda r, q: export.handle_request_status(
        jobs, urlsplit(r.path).path.rsplit("/", 1)[-1], base_url=server.url)))


def refresh_working_time_forever(client, spec: dict, stopping: threading.Event) -> None:
    """Keep <db>.working_time_totals current: one refresh every working_time.refresh_interval_s."""
    interval = spec["working_time"]["refresh_interval_s"]
    while not stopping.is_set():
        try:
            working_time.refresh(client, spec)
        except Exception as exc:  # keep serving; the next round retries from the same watermark
            print(f"cvat-analytics: working-time refresh failed: {_first_line(exc)}", file=sys.stderr, flush=True)
        stopping.wait(interval)


def make_server(client, spec: dict, host: str, port: int, dsn: str = "",
                tokens: list[Token] | None = None) -> EventServer:
    """A bound server (port 0 picks a free one: see `.server_address`); call serve_forever().
    `tokens` default to the spec's, with secrets from the environment."""
    return EventServer(client, spec, host, port, dsn, tokens)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(dsn: str, spec: dict, host: str, port: int) -> int:
    """Open the store, apply pending migrations (chdb: this process owns it), serve until SIGTERM/SIGINT.

    Exit 2, before opening anything, when a token's secret is missing or when no token
    is configured and `host` is not a loopback address (anyone reaching it could read
    and write every event)."""
    try:
        tokens = load_tokens(spec)
    except AccessError as exc:
        print(f"cvat-analytics: {exc}", file=sys.stderr)
        return 2
    if not tokens and not _is_loopback(host):
        print(f"cvat-analytics: refusing to listen on {host}: no access token is configured, so anyone "
              "who reaches it could read and write every event. Bind to 127.0.0.1, or add tokens "
              "under access.tokens in the spec (see README, Reliability and security).", file=sys.stderr)
        return 2
    refresh_client = None
    if spec["working_time"]["engine"] == "udf" and chdb_path(dsn) is not None:
        # chdb loads executable UDFs only into the handle that first opens the engine:
        # the refresh gets that handle.
        refresh_client = working_time.connect_with_udf(dsn, spec)
    client = connect(dsn)
    if chdb_path(dsn) is not None:
        from .migrate import migrate
        migrate(client, spec, log=lambda line: print(f"cvat-analytics: {line}", file=sys.stderr))
    server = make_server(client, spec, host, port, dsn, tokens)
    # Exports and the refresh get engine handles of their own: an open export stream
    # holds its handle, and ingest must not wait behind either.
    data_dir = chdb_path(dsn)
    jobs = export.ExportJobs(lambda: open_handle(dsn), spec,
                             directory=data_dir.parent / f"{data_dir.name}-exports" if data_dir else None)
    install_export(server, jobs)
    install_dashboards(server, lambda: open_handle(dsn), spec)
    refresher = threading.Thread(target=refresh_working_time_forever, name="working-time",
                                 args=(refresh_client or open_handle(dsn), spec, server.stopping),
                                 daemon=True)
    refresher.start()
    if not _is_loopback(host):
        print(f"cvat-analytics: listening on {host} with {len(tokens)} access token(s); tokens travel "
              "in clear over HTTP: put TLS (a reverse proxy) in front on untrusted networks",
              file=sys.stderr)
    print(f"cvat-analytics: serving {server.url} (database {server.database}, {redact(dsn)}); "
          "POST events to /, GET /health, CSV export at /api/events, dashboards at /dashboards", file=sys.stderr, flush=True)

    stoppers: list[threading.Thread] = []

    def on_signal(signum, _frame):
        # stop() waits for serve_forever() to return, and that runs on this thread: stop from another.
        if not stoppers:
            stoppers.append(threading.Thread(target=server.stop, name="stop"))
            stoppers[0].start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.serve_forever()
    for stopper in stoppers:
        stopper.join()  # requests in flight answered, threads joined
    refresher.join(timeout=60)
    jobs.shutdown()
    print("cvat-analytics: stopped", file=sys.stderr, flush=True)
    return 0
