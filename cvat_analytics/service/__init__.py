"""The embedded service, `cvat-analytics serve`: http (the HTTP layer), routes (the route
table and access check), access (tokens), ingest, health, export_routes, dashboard_routes,
app (the process: open the store, serve, stop)."""
from .app import make_server, serve

__all__ = ["make_server", "serve"]
