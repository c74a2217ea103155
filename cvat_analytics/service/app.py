"""`cvat-analytics serve`: open the store, migrate, build the server, serve until
SIGTERM/SIGINT, stop gracefully."""
from __future__ import annotations

import ipaddress
import signal
import sys
import threading

from .. import working_time
from ..errors import first_line
from ..export import ExportJobs
from ..store import chdb_path, connect, open_handle, redact
from .access import AccessError, Token, load_tokens
from .http import EventServer
from .routes import table


def make_server(client, spec: dict, host: str, port: int, dsn: str = "",
                tokens: list[Token] | None = None, jobs: ExportJobs | None = None,
                pages=None) -> EventServer:
    """A bound server (port 0 picks a free one: see `.server_address`); call serve_forever().
    `tokens` default to the spec's, with secrets from the environment. Without `jobs`
    (export.ExportJobs) or `pages` (dashboards.Dashboards) those routes are absent."""
    tokens = load_tokens(spec) if tokens is None else tokens
    routes = table(client, spec, dsn, tokens, jobs=jobs, pages=pages)
    return EventServer(routes, spec["embedded"], host, port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refresh_working_time_forever(client, spec: dict, serving: threading.Event,
                                 stopping: threading.Event) -> None:
    """Keep <db>.working_time_totals current: one refresh every working_time.refresh_interval_s,
    the first once the store is migrated and the server is serving."""
    interval = spec["working_time"]["refresh_interval_s"]
    while not serving.wait(1):
        if stopping.is_set():
            return
    while not stopping.is_set():
        try:
            working_time.refresh(client, spec)
        except Exception as exc:  # keep serving; the next round retries from the same watermark
            print(f"cvat-analytics: working-time refresh failed: {first_line(exc)}", file=sys.stderr, flush=True)
        stopping.wait(interval)


def start_working_time_refresh(dsn: str, spec: dict, serving: threading.Event,
                               stopping: threading.Event) -> threading.Thread:
    """The thread that keeps the working-time totals current (all of it: remove this
    function and its one call to let ClickHouse refresh them instead). Called before
    anything else opens the store: see below."""
    if spec["working_time"]["engine"] == "udf" and chdb_path(dsn) is not None:
        # chdb loads executable UDFs only into the handle that first opens the engine:
        # the refresh gets that handle, opened before any other.
        client = working_time.connect_with_udf(dsn, spec)
    else:
        client = None
    refresher = threading.Thread(target=refresh_working_time_forever, name="working-time",
                                 args=(client or open_handle(dsn), spec, serving, stopping), daemon=True)
    refresher.start()
    return refresher


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
    serving, stopping = threading.Event(), threading.Event()
    refresher = start_working_time_refresh(dsn, spec, serving, stopping)
    client = connect(dsn)
    if chdb_path(dsn) is not None:
        from ..migrate import migrate
        migrate(client, spec, log=lambda line: print(f"cvat-analytics: {line}", file=sys.stderr))
    from ..dashboards import Dashboards

    # Exports and the dashboards get engine handles of their own: an open export stream
    # holds its handle, and ingest must not wait behind either.
    data_dir = chdb_path(dsn)
    jobs = ExportJobs(lambda: open_handle(dsn), spec,
                      directory=data_dir.parent / f"{data_dir.name}-exports" if data_dir else None)
    server = make_server(client, spec, host, port, dsn, tokens, jobs=jobs,
                         pages=Dashboards(lambda: open_handle(dsn), spec))
    if not _is_loopback(host):
        print(f"cvat-analytics: listening on {host} with {len(tokens)} access token(s); tokens travel "
              "in clear over HTTP: put TLS (a reverse proxy) in front on untrusted networks",
              file=sys.stderr)
    print(f"cvat-analytics: serving {server.url} (database {spec['clickhouse']['database']}, {redact(dsn)}); "
          "POST events to /, GET /health, CSV export at /api/events, dashboards at /dashboards"
          + (", read-only SQL (ClickHouse's HTTP interface) at /clickhouse" if data_dir else ""),
          file=sys.stderr, flush=True)

    stoppers: list[threading.Thread] = []

    def on_signal(signum, _frame):
        # stop() waits for serve_forever() to return, and that runs on this thread: stop from another.
        if not stoppers:
            stoppers.append(threading.Thread(target=server.stop, name="stop"))
            stoppers[0].start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serving.set()
    server.serve_forever()
    for stopper in stoppers:
        stopper.join()  # requests in flight answered, threads joined
    stopping.set()
    refresher.join(timeout=60)
    jobs.shutdown()
    print("cvat-analytics: stopped", file=sys.stderr, flush=True)
    return 0
