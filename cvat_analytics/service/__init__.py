"""The embedded service, `cvat-analytics serve`: one module per job, listed with their jobs in
docs/architecture.md ("The rooms"). An event's way in: http (the socket, framing, body) ->
routes (the route table, origin and access checks) -> ingest (POST /: decode, validate) ->
group_commit (one INSERT per group, each request once; stored_keys spares it a look-up) ->
store.insert_compact_rows. app opens the store, builds the server from routes.table(), serves
and stops it."""
from .app import make_server, serve

__all__ = ["make_server", "serve"]
