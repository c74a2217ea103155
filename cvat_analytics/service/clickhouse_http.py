"""/clickhouse: ClickHouse's own HTTP interface, read-only, on the engine `serve` holds.

chdb lets one process open the data, and `serve` is that process; this route lets SQL
clients (curl, clickhouse-connect, Grafana's ClickHouse plugin) query it while events
flow. It speaks the interface those clients use: the query in `query` or the POST body,
`database`, `default_format`, a FORMAT clause, `param_<name>`, settings as URL
parameters, ClickHouse's error text with X-ClickHouse-Exception-Code, and the
X-ClickHouse-* response headers (see docs/working-time-and-sql.md, SQL).

Before anything runs, the request passes the SQL gate (cvat_analytics_generator.sql_gate,
the one the dashboards and `check` use too): URL settings only from its allow-list (output
formatting; never one naming a path, a URL or a schema: output_format_schema wrote files,
format_template_* quoted them), the limits only lowered and positive, an output format
(default_format, X-ClickHouse-Format, FORMAT) only from its list, one statement of an
allowed kind without SETTINGS, INTO OUTFILE, file() or a table function off its list. The one
SETTINGS clause let through is the Grafana plugin's ad hoc filters, exactly as it writes them
and with a condition of columns and values only (sql_gate.table_filters): set on the handle
before readonly=1, and the query runs without the clause.
Refusals are 403 (400 for a malformed limit or query_id), naming the setting or clause.

Every request gets an engine handle of its own (chdb.connect on the open engine is
cheap: 0.3 ms), set up in this order: the allowed URL settings; the spec's limits
(clickhouse.dashboards_max_execution_time_s and _max_memory_usage_bytes, and the
embedded.sql bounds), each the caller's if lower; then `readonly=1`. From then on the
engine refuses every write, DDL and settings change as well (what readonly=1 alone lets
through on chdb is in the gate's text).

The answer is streamed, block by block as the engine makes it (blocks of at most
ANSWER_BLOCK_ROWS rows), so `serve` holds a block or two of it, not the whole (a 2.5 GB
answer built whole took serve to 8.2 GB). Its first BUFFERED_BYTES are held back: an
answer that ends within them is sent with its length, and an error there is a clean
status with ClickHouse's text (past embedded.sql.max_answer_bytes already: 400). A longer
one goes out with chunked transfer encoding, its 200 sent before a later error can come:
past max_execution_time, or past embedded.sql.max_answer_bytes, the bytes sent (the
engine's max_result_bytes counts the result in memory, not the text: a 1,000-character
alias on 2.5M JSON rows passed it). Then the answer ends as ClickHouse (25.11+) ends one
with wait_end_of_query=0: its exception text between `__exception__` markers that carry
the random X-ClickHouse-Exception-Tag of the headers (clickhouse-connect raises it as the
server's error), and no terminating zero-length chunk, the connection closed: an HTTP
client reading the chunked framing fails rather than taking a cut answer for a whole one
(curl exits 18, Python's http.client raises IncompleteRead, urllib3 ProtocolError). A
block that would pass the bound is not sent. wait_end_of_query is accepted and changes
nothing. Native for a client_protocol_version is rewritten block by block
(native_revision.py).
"""
from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from cvat_analytics_generator.render import render_template
from cvat_analytics_generator.sql import parse as parse_sql
from cvat_analytics_generator.sql_gate import Refused, check_format, check_settings, check_statement, table_filters

from . import native_revision
from .http import BodyError
from .responses import Response, StreamCut

if TYPE_CHECKING:
    from .http import RequestHandler

PREFIX = "/clickhouse"
TEMPLATE = "clickhouse/runtime/sql_http.sql.j2"

# URL parameters that are part of the interface, not settings (ClickHouse's HTTPHandler).
# The session ones are accepted and have no effect: under readonly=1 nothing a query
# does outlives it (no SET, no temporary table), so a session would hold nothing.
TRANSPORT = {"query", "database", "default_format", "query_id", "session_id", "session_timeout",
             "session_check", "quota_key", "buffer_size", "wait_end_of_query", "user", "password",
             "role", "stacktrace", "client_protocol_version", "compress", "decompress", "with_stacktrace",
             "close_session", "http_native_compression_disable_checksumming_on_decompress"}
_SETTING = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A query_id is echoed in a response header: printable ASCII only (a CR/LF there dropped
# the connection after the query had run, with no answer and no log line).
_QUERY_ID = re.compile(r"[\x20-\x7e]{1,200}")
_CODE = re.compile(r"Code: (\d+)\. ")

# ClickHouse's exceptionCodeToHTTPStatus, plus READONLY (164) as 403: the issue's
# contract is that a refused write is a 4xx (ClickHouse itself answers 500 there).
_STATUS = {
    **dict.fromkeys((36, 6, 25, 26, 27, 38, 41, 72, 62, 117, 53, 15, 44, 8, 167, 168, 427), 400),
    **dict.fromkeys((497, 164), 403),
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 63, 73), 404),
    159: 408, 48: 501,
    202: 503,  # TOO_MANY_SIMULTANEOUS_QUERIES (500 on ClickHouse): 503 says "retry", and clients do
}
READONLY, ACCESS_DENIED = 164, 497
ANSWER_BLOCK_ROWS = 8192

# Content types ClickHouse gives its common output formats.
_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TabSeparatedWithNames": "text/tab-separated-values; charset=UTF-8",
    "TabSeparatedWithNamesAndTypes": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
    "JSON": "application/json; charset=UTF-8", "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "Native": "application/octet-stream", "RowBinary": "application/octet-stream",
    "Parquet": "application/octet-stream", "Arrow": "application/octet-stream",
    "ArrowStream": "application/octet-stream",
}


class ClickHouseHTTP:
    """The handler of every path under /clickhouse."""

    def __init__(self, dsn_path: Path, spec: dict):
        self.path = str(dsn_path)
        self.spec = spec
        # `setting` and `database` stand in for the names each request fills in (see _set, _use).
        text = render_template(spec, TEMPLATE, setting="setting", database="database")
        statements = parse_sql(text, TEMPLATE).statements
        self.sql = {s.name: s.sql for s in statements}
        ch, embedded = spec["clickhouse"], spec["embedded"]
        # The bounds a caller may lower and never raise, with their spec keys.
        self.limits = {
            "max_execution_time": (ch["dashboards_max_execution_time_s"], "clickhouse.dashboards_max_execution_time_s"),
            "max_memory_usage": (ch["dashboards_max_memory_usage_bytes"], "clickhouse.dashboards_max_memory_usage_bytes"),
            "max_result_bytes": (embedded["sql"]["max_result_bytes"], "embedded.sql.max_result_bytes"),
            "max_result_rows": (embedded["sql"]["max_result_rows"], "embedded.sql.max_result_rows"),
            "max_threads": (embedded["sql"]["max_threads"], "embedded.sql.max_threads"),
            # Rows a block: a streamed answer is held a block at a time (ClickHouse's 65409 rows of
            # 1 KB each made 66 MB blocks and serve's peak 570 MB above idle; 8192 rows, 160 MB).
            "max_block_size": (ANSWER_BLOCK_ROWS, "the SQL interface's block size"),
        }
        self.max_answer_bytes = embedded["sql"]["max_answer_bytes"]
        # Queries at once: each may hold max_memory_usage, and ingest needs a core.
        self._running = threading.BoundedSemaphore(embedded["sql"]["max_concurrent_queries"])
        self._max_running = embedded["sql"]["max_concurrent_queries"]
        self._server_info: tuple[str, str, str, str] | None = None  # version, timezone, host, revision
        self._lock = threading.Lock()

    # -- the request -------------------------------------------------------------
    def __call__(self, request: "RequestHandler") -> Response:
        path = urlsplit(request.path).path
        if path in (f"{PREFIX}/ping", f"{PREFIX}/ping/") or (
                request.command in ("GET", "HEAD") and path in (PREFIX, PREFIX + "/") and not urlsplit(request.path).query):
            return Response(200, b"Ok.\n", "text/plain; charset=UTF-8")  # as ClickHouse: a health check
        if path not in (PREFIX, PREFIX + "/"):
            return self._error(Refused(73, f"no handler for {path[:100]}: queries go to {PREFIX}/",
                                       "UNKNOWN_TYPE_OF_QUERY"), "", status=404)
        query_id = ""
        try:
            if request.principal.forced_filters:
                filters = ", ".join(f"{k}={v}" for k, v in sorted(request.principal.forced_filters.items()))
                raise Refused(ACCESS_DENIED, f"token {request.principal.name!r} has forced filters ({filters}) and "
                              "the SQL interface cannot enforce them on every table a query reads; use a token "
                              "without forced filters", "ACCESS_DENIED")
            params = parse_qsl(urlsplit(request.path).query, keep_blank_values=True)
            args = dict(params)
            query_id = args.get("query_id") or str(uuid.uuid4())
            if not _QUERY_ID.fullmatch(query_id):
                bad, query_id = query_id, str(uuid.uuid4())
                raise Refused(36, f"query_id must be 1-200 printable ASCII characters, got {bad[:40]!r}",
                              "BAD_ARGUMENTS")
            if args.get("compress", "0") not in ("0", "") or args.get("decompress", "0") not in ("0", ""):
                raise Refused(48, "compress=1 and decompress=1 (ClickHouse's block compression) are not "
                              "supported here; leave them off", "NOT_IMPLEMENTED")
            sql = args.get("query", "")
            if request.command == "POST":
                body = request.read_body() if request.has_body() else b""
                sql = f"{sql}\n{body.decode('utf-8', 'replace')}" if sql and body else sql or body.decode("utf-8", "replace")
            if not sql.strip():
                raise Refused(62, "Empty query", "SYNTAX_ERROR")
            database = args.get("database") or request.headers.get("X-ClickHouse-Database") or ""
            settings = check_settings({k: v for k, v in params if k not in TRANSPORT and not k.startswith("param_")},
                                      self.limits)
            default_format = check_format(args.get("default_format") or request.headers.get("X-ClickHouse-Format")
                                          or "TabSeparated")
            bind = {k[6:]: v for k, v in params if k.startswith("param_")}
            if not self._running.acquire(blocking=False):
                raise Refused(202, f"Too many simultaneous queries. Maximum: {self._max_running} "
                              "(embedded.sql.max_concurrent_queries)", "TOO_MANY_SIMULTANEOUS_QUERIES")
            # The slot is held until the answer is sent: run() hands its release on.
            return self.run(sql, database, default_format, bind, settings, query_id,
                            _int(args.get("client_protocol_version")) or 0, release=self._running.release)
        except BodyError as exc:
            return Response(exc.status, f"{exc}\n".encode(), "text/plain; charset=UTF-8")
        except Refused as exc:
            return self._error(exc, query_id)

    def run(self, sql: str, database: str, default_format: str, bind: dict, settings: dict,
            query_id: str, protocol: int = 0, release=lambda: None) -> Response:
        """The answer to one query; `release` is called once it is sent (or refused)."""
        import chdb  # here: importing chdb opens an engine, and serve opens its own first

        answer = Answer(self.max_answer_bytes, release)
        try:
            try:
                conn = answer.conn = chdb.connect(self.path)
                info = self.server_info(conn)
                for name, value in settings.items():  # allowed ones and the limits (sql_gate)
                    self._set(conn, name, value)
                # The analyst's threads yield to ingest's (a Linux nice value; ClickHouse applies it
                # only with CAP_SYS_NICE, else it is a no-op).
                self._set(conn, "os_thread_priority", "19")
                # Grafana's ad hoc filters: the condition checked by the gate and set; the query runs without them.
                sql = table_filters(self._ask(conn), sql)
                self._set(conn, "readonly", "1")  # last: from here on no setting changes
                if database:
                    self._use(conn, database)
                output_format = self.check(conn, sql, bind) or default_format
                revision = min(protocol, int(info[3])) if protocol and output_format == "Native" else 0
                try:
                    stream = conn.send_query(sql, default_format, params=bind)
                except Exception as exc:
                    if "Streaming query is not supported" not in str(exc):
                        raise
                    # EXISTS, SHOW, DESCRIBE, EXPLAIN: chdb streams SELECTs only, and these answers are small.
                    stream = [conn.query(sql, default_format, params=bind)]
                answer.start(stream, revision)
            except Refused:
                raise
            except Exception as exc:  # chdb raises RuntimeError with ClickHouse's text
                raise _engine_error(exc) from None
        except Refused as exc:
            answer.close()
            # Past the answer's bound before anything was sent: the caller asked too much (4xx).
            return self._error(exc, query_id, status=400 if isinstance(exc, AnswerTooLarge) else None)
        except BaseException:
            answer.close()
            raise
        headers = {"X-ClickHouse-Format": output_format, "X-ClickHouse-Summary": json.dumps(answer.summary())}
        if answer.whole:
            body = answer.head()
            answer.close()
        else:
            body = answer
            headers["X-ClickHouse-Exception-Tag"] = answer.tag
        return Response(200, body, _CONTENT_TYPES.get(output_format, "text/plain; charset=UTF-8"),
                        self._headers(query_id, info, headers))

    def check(self, conn, sql: str, bind: dict) -> str | None:
        """The SQL gate on this request's engine handle; the query's FORMAT, if any."""
        return check_statement(self._ask(conn), sql, bind)

    @staticmethod
    def _ask(conn):
        """The SQL gate's way to run one statement on this request's engine handle."""
        return lambda text, params: conn.query(text, "TabSeparatedRaw", params=params).bytes().decode()

    # -- helpers -----------------------------------------------------------------
    def server_info(self, conn) -> tuple[str, str, str, str]:
        with self._lock:
            if self._server_info is None:
                row = conn.query(self.sql["server_info"], "TabSeparatedRaw").bytes().decode().rstrip("\n")
                self._server_info = tuple(row.split("\t"))
            return self._server_info

    def _set(self, conn, name: str, value: str) -> None:
        conn.query(self.sql["set_setting"].replace("`setting`", f"`{name}`"), "TSV", params={"value": _escaped(value)})

    def _use(self, conn, database: str) -> None:
        if not _SETTING.fullmatch(database):
            raise Refused(81, f"Database {database[:100]} does not exist", "UNKNOWN_DATABASE")
        conn.query(self.sql["use_database"].replace("`database`", f"`{database}`"), "TSV")

    def _headers(self, query_id: str, info: tuple | None, extra: dict | None = None) -> dict:
        headers = {"X-ClickHouse-Query-Id": query_id}
        if info:
            headers.update({"X-ClickHouse-Server-Display-Name": info[2], "X-ClickHouse-Timezone": info[1]})
        headers.update(extra or {})
        return headers

    def _error(self, exc: Refused, query_id: str, status: int | None = None) -> Response:
        text = str(exc)
        return Response(status or _STATUS.get(exc.code, 500), f"{text}\n".encode(), "text/plain; charset=UTF-8",
                        self._headers(query_id, self._server_info, {"X-ClickHouse-Exception-Code": str(exc.code)}))


class AnswerTooLarge(Refused):
    """The answer passed embedded.sql.max_answer_bytes."""


# The first bytes of an answer held back before any is sent: an answer that ends within them
# (most do) goes out whole, with its length and a status that says how it ended.
BUFFERED_BYTES = 1 << 20
TOO_MANY_ROWS_OR_BYTES = 396


class Answer:
    """One query's answer as the engine streams it (one block a chunk), at most `limit`
    bytes as sent. It holds the engine handle and the query slot until close()."""

    def __init__(self, limit: int, release):
        self.limit, self._release = limit, release
        self.conn = self._stream = self._chunks = self._rewrite = None
        self._head: list[bytes] = []
        self.whole = False
        self.sent = 0  # bytes taken so far (held back or sent)
        self.tag = uuid.uuid4().hex  # unguessable: the answer's own bytes cannot fake the error markers
        self._counts = dict.fromkeys(("read_rows", "read_bytes", "result_rows", "result_bytes"), 0)
        self._elapsed = 0.0

    def start(self, stream, revision: int) -> None:
        """Read up to BUFFERED_BYTES (or the end); an error or the limit here raises Refused."""
        self._stream, self._chunks = stream, iter(stream)
        streamed = not isinstance(stream, list)
        self._rewrite = native_revision.Rewriter(revision, streamed) if revision else None
        while self.sent <= BUFFERED_BYTES:
            piece = self._next()
            if piece is None:
                self.whole = True
                return
            self._head.append(piece)

    def head(self) -> bytes:
        return b"".join(self._head)

    def __iter__(self):
        """The pieces to send: the held-back ones, then the rest; a cut ends with the
        exception markers and StreamCut (responses.py), so the transfer is left broken."""
        head, self._head = self._head, []
        yield from head
        while True:
            try:
                piece = self._next()
            except Refused as exc:
                text = str(exc).encode()
                yield (b"__exception__\r\n%s\r\n%s\n%d %s\r\n__exception__\r\n"
                       % (self.tag.encode(), text, len(text), self.tag.encode()))
                raise StreamCut(str(exc)) from None
            if piece is None:
                return
            yield piece

    def _next(self) -> bytes | None:
        """The next block of the answer as sent, None at its end; Refused on an error or past the limit."""
        try:
            chunk = next(self._chunks, None)
            while chunk is not None and not chunk.bytes():
                chunk = next(self._chunks, None)
            if chunk is None:
                return None
            for name, value in (("read_rows", chunk.storage_rows_read()), ("read_bytes", chunk.storage_bytes_read()),
                                ("result_rows", chunk.rows_read()), ("result_bytes", chunk.bytes_read())):
                self._counts[name] += value
            self._elapsed = max(self._elapsed, chunk.elapsed())
            piece = chunk.bytes()
            if self._rewrite:
                piece = self._rewrite(piece)
        except native_revision.UnsupportedType as exc:
            raise Refused(48, str(exc), "NOT_IMPLEMENTED") from None
        except Exception as exc:  # chdb raises with ClickHouse's text
            raise _engine_error(exc) from None
        if self.sent + len(piece) > self.limit:
            raise AnswerTooLarge(TOO_MANY_ROWS_OR_BYTES, f"The answer is more than {self.limit} bytes "
                          "(embedded.sql.max_answer_bytes) and was cut there: ask for fewer rows or columns, "
                          "or use the CSV export", "TOO_MANY_ROWS_OR_BYTES")
        self.sent += len(piece)
        return piece

    def summary(self) -> dict:
        """X-ClickHouse-Summary: the whole answer's, or what was read before the headers went."""
        counts = {name: str(value) for name, value in self._counts.items()}
        return {"read_rows": counts["read_rows"], "read_bytes": counts["read_bytes"],
                "written_rows": "0", "written_bytes": "0", "total_rows_to_read": counts["read_rows"],
                "result_rows": counts["result_rows"], "result_bytes": counts["result_bytes"],
                "elapsed_ns": str(int(self._elapsed * 1e9))}

    def close(self) -> None:
        """Stop the query (if it still runs), close the engine handle, free the slot; once."""
        release, self._release = self._release, None
        try:
            if hasattr(self._stream, "close"):
                self._stream.close()
            if self.conn is not None:
                self.conn.close()
        finally:
            self._stream = self.conn = None
            if release:
                release()


def _escaped(value: str) -> str:
    """A query parameter's value as ClickHouse reads it: in TabSeparated's escaped form."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _engine_error(exc: Exception) -> Refused:
    """chdb's exception as ClickHouse's text and code."""
    text = str(exc).strip()
    start = text.find("Code: ")
    text = text[start:] if start > 0 else text
    match = _CODE.match(text)
    error = Refused(int(match.group(1)) if match else 1001, "", "")
    error.args = (text,)
    return error
