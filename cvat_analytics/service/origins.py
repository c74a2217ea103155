"""Doors a browser opens: requests a web page makes, and names a rebinding DNS answer gives.

Any page open in a browser on this machine can make it send a simple GET (no preflight)
to 127.0.0.1, and a DNS name that first points at the attacker and then at 127.0.0.1
makes the browser treat `serve` as the attacker's own origin. Neither sends a token
it does not have, but in open mode (no token needed, access.py) none is asked for.
So every request but ingest passes two checks before its route runs:

- **Host** (DNS rebinding): the name the client used must be one of this service's:
  localhost, 127.0.0.1 or [::1] (any port: a rebinding name is never one of them, and a
  local proxy may listen on another port), the bound address, or a name in
  `embedded.allowed_hosts` ("name" for any port, "name:port" for one).
  From a proxy in `embedded.trusted_proxies`, the name judged is its X-Forwarded-Host
  (the name the client used), else Host. Otherwise 421, naming the spec key. A request
  without Host (HTTP/1.0 clients) passes: browsers always send one. Ingest is left out:
  CVAT's server reaches it under whatever name its network gives (a compose service).
- **Browser** (cross-site requests): `Sec-Fetch-Site` cross-site or same-site (every
  other local web app is same-site with localhost: sites ignore ports) and an `Origin`
  that is present and not one of the names above are refused with 403 (here a loopback
  name or the bound address must come with serve's own port: localhost:3000 is another
  local web app, another origin). Clients that are
  not browsers (curl, clickhouse-connect, CVAT's server and SDK, Grafana's plugin) send
  neither. One exception: a top-level navigation to a dashboard page (a link followed
  from another site) is let through; the page is read by the user only, and its own
  links are same-origin. This check applies to ingest too: no browser posts events here,
  and a Blob body without a type is a simple request a page could send.
"""
from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

from .responses import Response, json_response

if TYPE_CHECKING:
    from .http import RequestHandler

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_AUTHORITY = re.compile(r"^(\[[0-9a-f:.]+\]|[^:\[\]/@]+)(?::([0-9]{1,5}))?$")


def split_authority(text: str) -> tuple[str, int | None] | None:
    """'Host:8282' -> ('host', 8282); None when it is not a host[:port]."""
    match = _AUTHORITY.match(text.strip().lower())
    if not match:
        return None
    return match.group(1).rstrip("."), int(match.group(2)) if match.group(2) else None


class Origins:
    """This service's names, and the two checks (see the module's text)."""

    def __init__(self, embedded: dict):
        self.allowed = [split_authority(name) for name in embedded.get("allowed_hosts", [])]
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in embedded.get("trusted_proxies", [])]

    def ours(self, authority: tuple[str, int | None] | None, bound: tuple, any_port: bool) -> bool:
        """Whether host[:port] names this service, bound to `bound` (the socket's address);
        `any_port`: a loopback name or the bound address with any port (Host), else only
        with the port serve listens on (Origin)."""
        if authority is None:
            return False
        name, given = authority
        address, port = bound[:2]
        address = f"[{address}]" if ":" in address else address
        if name in LOOPBACK_NAMES or (name == address and address not in ("0.0.0.0", "[::]")):
            return any_port or given == port
        return any(name == allowed and allowed_port in (None, given) for allowed, allowed_port in self.allowed)

    def refuse(self, request: "RequestHandler", path: str, ingest: bool) -> Response | None:
        """None when the request may go on; else the 403/421 that says why."""
        bound = request.server.server_address
        site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
        navigation = (request.command in ("GET", "HEAD") and path.startswith("/dashboards")
                      and request.headers.get("Sec-Fetch-Mode", "").lower() == "navigate"
                      and request.headers.get("Sec-Fetch-Dest", "").lower() == "document")
        if site in ("cross-site", "same-site") and not navigation:
            return _refused(403, f"a {site} request from a browser (Sec-Fetch-Site: {site}): this service "
                                 "answers its own pages and clients that are not browsers only")
        origin = request.headers.get("Origin")
        if origin is not None:
            scheme, _, rest = origin.strip().partition("://")
            if scheme.lower() not in ("http", "https") or not self.ours(split_authority(rest), bound, any_port=False):
                return _refused(403, "the request comes from a page of another origin (Origin header); "
                                     "add this service's public name to embedded.allowed_hosts if it is yours")
        if ingest:
            return None
        host = request.headers.get("Host")
        if self._from_proxy(request) and request.headers.get("X-Forwarded-Host"):
            host = request.headers["X-Forwarded-Host"].split(",")[0]
        if host is not None and not self.ours(split_authority(host), bound, any_port=True):
            return _refused(421, "the Host this request names is not one of this service's names (localhost, "
                                 "127.0.0.1, [::1], its address, or embedded.allowed_hosts): add the name "
                                 "clients use to embedded.allowed_hosts")
        return None

    def _from_proxy(self, request: "RequestHandler") -> bool:
        try:
            peer = ipaddress.ip_address(request.client_address[0])
        except (ValueError, IndexError, TypeError):
            return False
        return any(peer in network for network in self.proxies)


def _refused(status: int, message: str) -> Response:
    # Never quotes the header: what a page sends is the page's text.
    return json_response(status, {"error": message})
