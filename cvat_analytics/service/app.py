"""`cvat-analytics serve`: open the store, migrate it (chdb: this process owns it), build the
server (routes.table()), serve until SIGTERM/SIGINT, stop gracefully."""
from __future__ import annotations

import ipaddress
import signal
import sys
import threading

from cvat_analytics_generator.render import is_cluster

from ..errors import first_line
from ..export import ExportJobs
from ..store import chdb_path, connect, engine_settings, open_handle, redact, set_allocator
from . import logs
from .access import AccessError, Token, is_open, load_tokens
from .http import EventServer
from .logs import SERVICE
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


def serve(dsn: str, spec: dict, host: str, port: int, log_format: str = "text") -> int:
    """Open the store, apply pending migrations (chdb: this process owns it), serve until SIGTERM/SIGINT.
    The log (logs.py) goes to stderr as `log_format`, text or json.

    Exit 2, before opening anything, when the spec renders a ClickHouse cluster (serve's
    request-key table and migrations are the single server's: on a cluster a retried batch
    would be grouped per node and stored again), when a token's secret is missing or when no
    token grants more than sql (open mode, access.py) and `host` is not a loopback address
    (anyone reaching it could read and write every event)."""
    if is_cluster(spec):
        cluster = spec["clickhouse"]["cluster"]
        print(f"cvat-analytics: refusing to serve a ClickHouse cluster (clickhouse.cluster: {cluster['shards']} "
              f"shard(s) x {cluster['replicas']} replica(s)): serve runs on one store, chdb or one server. A cluster "
              "takes events through Vector and shows them in Grafana (docs/cluster.md); serve a spec with "
              "clickhouse.cluster 1 x 1.", file=sys.stderr)
        return 2
    try:
        tokens = load_tokens(spec)
    except AccessError as exc:
        print(f"cvat-analytics: {exc}", file=sys.stderr)
        return 2
    if is_open(tokens) and not _is_loopback(host):
        print(f"cvat-analytics: refusing to listen on {host}: no access token is configured (beyond "
              "sql), so anyone who reaches it could read and write every event. Bind to 127.0.0.1, or add tokens "
              "under access.tokens in the spec (see docs/reliability-and-security.md).", file=sys.stderr)
        return 2
    logs.configure(log_format)
    # No thread of ours keeps working time current: ClickHouse does, with the refreshable
    # view the migrations create (see docs/architecture.md, Working time).
    set_allocator(spec)  # before the engine loads: its allocator reads its options only then
    client = connect(dsn, engine=engine_settings(spec))  # the engine's caches and cap, as the spec sizes them
    if chdb_path(dsn) is not None:
        from .. import working_time
        from ..migrate import migrate
        migrate(client, spec, log=SERVICE.info)
        try:
            working_time.refresh_once_the_engine_is_up(client, spec)
        except Exception as exc:  # the scheduled runs go on: a warning, not a service that will not start
            SERVICE.warning("the working-time refresh could not be started at once: %s", first_line(exc)[:300])
    from ..dashboards import Dashboards

    # Exports and the dashboards get engine handles of their own: an open export stream
    # holds its handle, and ingest must not wait behind either.
    data_dir = chdb_path(dsn)
    jobs = ExportJobs(lambda: open_handle(dsn), spec,
                      directory=data_dir.parent / f"{data_dir.name}-exports" if data_dir else None)
    if jobs.removed_at_start:
        print(f"cvat-analytics: removed {jobs.removed_at_start} export file(s) left by an earlier run",
              file=sys.stderr, flush=True)
    server = make_server(client, spec, host, port, dsn, tokens, jobs=jobs,
                         pages=Dashboards(lambda: open_handle(dsn), spec))
    if not _is_loopback(host):
        SERVICE.warning("listening on %s with %d access token(s); tokens travel in clear over HTTP: "
                        "put TLS (a reverse proxy) in front on untrusted networks", host, len(tokens))
    SERVICE.info("serving %s (database %s, %s); POST events to /, GET /health, CSV export at /api/events, "
                 "dashboards at /dashboards, /metrics, /openapi.json%s",
                 server.url, spec["clickhouse"]["database"], redact(dsn),
                 ", read-only SQL (ClickHouse's HTTP interface, with a token "
                 "holding the sql permission) at /clickhouse" if data_dir else "")

    stoppers: list[threading.Thread] = []

    def stop(signum: int) -> None:
        SERVICE.info("stopping (%s): answering the requests in flight", signal.Signals(signum).name)
        server.stop()

    def on_signal(signum, _frame):
        # stop() waits for serve_forever() to return, and that runs on this thread: stop from another.
        if not stoppers:
            stoppers.append(threading.Thread(target=stop, args=(signum,), name="stop"))
            stoppers[0].start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.serve_forever()
    for stopper in stoppers:
        stopper.join()  # requests in flight answered, threads joined
    jobs.shutdown()
    SERVICE.info("stopped")
    return 0
