"""Open ClickHouse through clickhouse-connect: a server over HTTP, or chdb in-process.

One client everywhere. chdb lets a process open one data path for its whole life,
and a path can be open in one process at a time; the errors chdb gives for both are
obscure, so we check first and say what is going on.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry, Histogram

# Put in every INSERT: a server's defaults differ from chdb's (docs/architecture.md, Version pitfalls), and
# a retried insert must be recognised by its deduplication token.
INSERT_SETTINGS = {
    "date_time_input_format": "best_effort",
    "input_format_skip_unknown_fields": 1,
    "input_format_null_as_default": 1,
    "async_insert": 0,
    "insert_deduplicate": 1,
}

_clients: dict[str, Client] = {}

# Every insert this process makes, whoever makes it (serve's GET /metrics shows it).
INSERT_REGISTRY = CollectorRegistry(auto_describe=True)
INSERT_SECONDS = Histogram("cvat_analytics_insert_seconds", "Seconds an INSERT of events into ClickHouse took",
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                           registry=INSERT_REGISTRY)


class StoreError(Exception):
    """A DSN that cannot be opened, worded for the operator."""


def chdb_path(dsn: str) -> Path | None:
    """The data directory of a chdb:// DSN, or None for a server DSN."""
    if not dsn.startswith("chdb:"):
        return None
    parsed = urlparse(dsn)
    if parsed.netloc in ("", None):
        return Path(unquote(parsed.path))
    if parsed.netloc == "memory":
        return None
    # chdb://relative/path: the netloc is the first path component.
    return Path(parsed.netloc + unquote(parsed.path))


def lock_holder(path: Path) -> int | None:
    """The pid of another live process holding the chdb data path, if any."""
    status = path / "status"
    try:
        first = status.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    if not first.startswith("PID:"):
        return None
    pid = int(first.split(":", 1)[1])
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _describe_process(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        cmd = ""
    return f"process {pid}" + (f" ({cmd})" if cmd else "")


def default_dsn(spec: dict) -> str:
    """Where `make up` keeps the embedded store: chdb under the spec's embedded.data_dir."""
    return f"chdb://{Path(spec['embedded']['data_dir']) / 'clickhouse'}"


# The spec's embedded.engine keys and the chdb server settings they size (MiB -> bytes): the
# only settings passed when the engine opens (chdb reads them then, and only then).
ENGINE_SETTINGS = {
    "mark_cache_mb": "mark_cache_size",
    "primary_index_cache_mb": "primary_index_cache_size",
    "uncompressed_cache_mb": "uncompressed_cache_size",
    "index_mark_cache_mb": "index_mark_cache_size",
    "query_condition_cache_mb": "query_condition_cache_size",
    "compiled_expression_cache_mb": "compiled_expression_cache_size",
    "max_server_memory_mb": "max_server_memory_usage",
}


# What a query past the engine's own bound (embedded.engine.max_server_memory_mb) is told.
ENGINE_MEMORY_MESSAGE = ("the engine is at its memory bound (embedded.engine.max_server_memory_mb): "
                         "try again when fewer queries run")


def memory_exceeded(exc: Exception) -> str | None:
    """Which bound the engine's MEMORY_LIMIT_EXCEEDED in `exc` names: "total" (the whole
    engine's), "query" (the query's max_memory_usage), or None (another error)."""
    text = str(exc)
    if "MEMORY_LIMIT_EXCEEDED" not in text:
        return None
    return "total" if "(total)" in text else "query"


def engine_settings(spec: dict) -> dict:
    """chdb's server settings from the spec's embedded.engine (docs/configuration.md)."""
    engine = spec["embedded"]["engine"]
    return {setting: int(engine[key]) * 1048576 for key, setting in ENGINE_SETTINGS.items()}


# chdb's allocator (jemalloc, built into its library) reads its options from this variable,
# once, when the library loads. ClickHouse builds it to keep freed pages 5 s
# (dirty_decay_ms:5000, no background thread), which a process of serve's size counts in
# its RSS: the export's windows left up to ~200 MB of them (docs/benchmarks.md, Memory).
ALLOCATOR_ENV = "JE_MALLOC_CONF"


def set_allocator(spec: dict) -> bool:
    """Have the engine's allocator return what a query freed after
    embedded.engine.allocator_decay_ms, from a thread of its own (so also while idle).
    Only before this process loads chdb, and never over the operator's own JE_MALLOC_CONF;
    True if it was set."""
    if "chdb" in sys.modules or ALLOCATOR_ENV in os.environ:
        return False
    decay = int(spec["embedded"]["engine"]["allocator_decay_ms"])
    os.environ[ALLOCATOR_ENV] = f"dirty_decay_ms:{decay},muzzy_decay_ms:0,background_thread:true"
    return True


def connect(dsn: str, create: bool = True, engine: dict | None = None) -> Client:
    """A client for `dsn`; one per DSN per process (chdb allows only one path anyway).

    create=False (commands that only read): a chdb path with no data is an error naming
    it, instead of a new empty store that answers "database does not exist".
    engine: chdb's server settings (engine_settings), applied if this call opens the engine."""
    if dsn in _clients:
        return _clients[dsn]
    path = chdb_path(dsn)
    if path is not None:
        path = path.resolve()
        holder = lock_holder(path)
        if holder is not None:
            raise StoreError(
                f"the chdb data at {path} is in use by {_describe_process(holder)}. "
                "Only one process can open it: send events to that service over HTTP, or "
                "stop it first (`make down`), then run this command again."
            )
        open_paths = [p for p in _clients if chdb_path(p) is not None]
        if open_paths:
            raise StoreError(
                f"this process already opened {open_paths[0]}; chdb can open one data path per process"
            )
        if not create and not (path / "metadata").is_dir():
            raise StoreError(
                f"there is no ClickHouse data at {path}: `make up` or `cvat-analytics migrate "
                f"--dsn chdb://{path}` creates it (without --dsn, commands use "
                "chdb://<embedded.data_dir>/clickhouse from the spec)"
            )
        path.mkdir(parents=True, exist_ok=True)
        dsn_to_open, extra = f"chdb://{path}", {"chdb_options": dict(engine or {})}
    else:
        dsn_to_open, extra = server_dsn(dsn)
    try:
        client = clickhouse_connect.get_client(dsn=dsn_to_open, **extra)
    except Exception as exc:  # clickhouse-connect raises several kinds; all mean "cannot open"
        raise StoreError(f"cannot open {redact(dsn)}: {exc}") from None
    _clients[dsn] = client
    return client


# A server DSN with a user and no password takes the password from here, as clickhouse-client
# does: no character of it needs encoding, and it stays out of the process list.
PASSWORD_ENV = "CLICKHOUSE_PASSWORD"


def server_dsn(dsn: str) -> tuple[str, dict]:
    """A server DSN without its credentials, and the get_client arguments it carries.

    The user and password go to get_client apart from the URL, percent-decoded (a password
    holding `@ : / # % ?` is written %40 %3A %2F %23 %25 %3F), or, when the DSN names a
    user and no password, the password is $CLICKHOUSE_PASSWORD. A path is where the
    server's HTTP interface is mounted (http://127.0.0.1:8282/clickhouse: `serve`'s
    read-only SQL interface), not a database as clickhouse-connect would read it: the
    database always comes from the spec here."""
    parsed = urlparse(dsn)
    try:
        parsed.port
    except ValueError:
        parsed = None
    if parsed is None or "@" in parsed.path + parsed.query + parsed.fragment or not parsed.hostname:
        # Not echoed: what is left of a password that broke the URL would be printed.
        raise StoreError("cannot read the server DSN: expected http://user[:password]@host:port[/path]; "
                         "percent-encode `@ : / # % ?` in the password (e.g. urllib.parse.quote(password, "
                         f"safe='')), or leave it out of the DSN and set ${PASSWORD_ENV}")
    extra: dict = {}
    if parsed.username is not None:
        extra["username"] = unquote(parsed.username)
        extra["password"] = (unquote(parsed.password) if parsed.password is not None
                             else os.environ.get(PASSWORD_ENV, ""))
    parsed = parsed._replace(netloc=parsed.netloc.rpartition("@")[2])
    if parsed.path.strip("/"):
        extra["proxy_path"] = parsed.path.rstrip("/")
    return parsed._replace(path="").geturl(), extra


def open_handle(dsn: str) -> Client:
    """A client of its own, for a thread that must not wait behind another's query.

    A chdb handle (like an HTTP session) runs one query at a time and an open stream
    holds it. chdb allows any number of handles on the one engine a process hosts."""
    path = chdb_path(dsn)
    if path is None:
        dsn_to_open, extra = server_dsn(dsn)
        return clickhouse_connect.get_client(dsn=dsn_to_open, **extra)
    connect(dsn)  # opens (and lock-checks) the engine once for the process
    return clickhouse_connect.get_client(dsn=f"chdb://{path.resolve()}")


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    parsed = urlparse(dsn)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    return dsn


def insert_json_rows(client: Client, database: str, body: bytes, token: str | None = None) -> None:
    """INSERT a JSONEachRow body into <database>.events with explicit input settings."""
    settings = dict(INSERT_SETTINGS)
    if token:
        settings["insert_deduplication_token"] = token
    with INSERT_SECONDS.time():
        client.raw_insert(f"`{database}`.events", None, body, settings=settings, fmt="JSONEachRow")


def insert_compact_rows(client: Client, database: str, columns: list[str], body: bytes, token: str) -> None:
    """INSERT JSONCompactEachRow lines (one JSON array of `columns` values per line) into <database>.events."""
    settings = dict(INSERT_SETTINGS, insert_deduplication_token=token)
    with INSERT_SECONDS.time():
        client.raw_insert(f"`{database}`.events", columns, body, settings=settings, fmt="JSONCompactEachRow")
