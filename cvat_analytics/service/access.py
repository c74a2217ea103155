"""Who may do what on `cvat-analytics serve`: tokens, permissions, forced row filters.

The spec's `access.tokens` lists callers:

    access:
      tokens:
        - name: cvat-server          # shows in the log; namespaces Idempotency-Keys
          secret_env: CVAT_ANALYTICS_TOKEN_CVAT   # the secret is read from this variable
          permissions: [ingest]
        - name: org-7-export
          secret_env: CVAT_ANALYTICS_TOKEN_ORG7
          permissions: [export, dashboards]
          forced_filters: {org_id: 7}            # and/or user_id, like CVAT's own rules
        - name: analyst
          secret_env: CVAT_ANALYTICS_TOKEN_SQL
          permissions: [sql]                     # /clickhouse: read-only SQL; refused (403)
                                                 # to a token with forced filters
          optional: true                         # unset variable: the token is left out

A request names its token as `Authorization: Bearer <secret>` (or `Token <secret>`,
as CVAT's clients write it, or `Basic` with the secret as the password and any user
name, as ClickHouse clients such as Grafana's plugin send a user and password). No or
an unknown token -> 401; a known token without
the permission its route names (routes.py) -> 403. Secrets are compared with hmac.compare_digest,
against every configured token, so the time taken does not say which one matched.

Forced filters are CVAT's (see docs/cvat-compatibility.md, Permissions): an export by a
caller forced to org 7 only ever sees org 7's rows; asking for another org answers
403 "You don't have permission to view events with org_id=...". The dashboards read
`request.principal.forced_filters` and add them to every query.

Open mode: when no token grants anything but `sql`, every caller is `LOCAL` (every
permission but `sql`, no filter) and `serve` binds only to a loopback address. `sql`
always needs a token: ClickHouse's HTTP interface reads every organisation's events,
and anything on the machine could otherwise reach it. The shipped spec declares one
`optional` sql token, whose secret `make up` writes to .env; only a token with nothing
but `sql` may be optional, so an unset variable can never open the other routes.
"""
from __future__ import annotations

import base64
import hmac
import os
import re
from dataclasses import dataclass, field
from typing import Mapping

PERMISSIONS = ("ingest", "export", "dashboards", "metrics", "sql")
MIN_SECRET_LENGTH = 16


class AccessError(Exception):
    """The access configuration cannot be used (a secret is missing or too short)."""


class Forbidden(Exception):
    """403: the caller may not see what it asked for."""


@dataclass(frozen=True)
class Principal:
    name: str
    permissions: frozenset[str]
    forced_filters: Mapping[str, int] = field(default_factory=dict)


LOCAL = Principal("local", frozenset(PERMISSIONS) - {"sql"})
# A caller without a (known) token on an open route, when tokens are configured.
ANONYMOUS = Principal("anonymous", frozenset())


@dataclass(frozen=True)
class Token:
    secret: bytes
    principal: Principal


def load_tokens(spec: dict, environ: Mapping[str, str] | None = None) -> list[Token]:
    """The spec's tokens with their secrets taken from the environment."""
    environ = os.environ if environ is None else environ
    tokens = []
    for entry in spec.get("access", {}).get("tokens", []):
        variable = entry["secret_env"]
        secret = environ.get(variable, "")
        if entry.get("optional") and set(entry["permissions"]) != {"sql"}:
            raise AccessError(f"access token {entry['name']!r}: only a token whose one permission is sql may be "
                              "optional (an unset secret must never leave a route open)")
        if not secret and entry.get("optional"):
            continue  # its routes answer 401 naming the variable (routes.py)
        if len(secret) < MIN_SECRET_LENGTH:
            state = "is not set" if not secret else f"holds only {len(secret)} characters"
            raise AccessError(f"access token {entry['name']!r}: the environment variable {variable} {state}; "
                              f"set it to a random secret of at least {MIN_SECRET_LENGTH} characters")
        principal = Principal(entry["name"], frozenset(entry["permissions"]),
                              dict(entry.get("forced_filters") or {}))
        tokens.append(Token(secret.encode(), principal))
    return tokens


_SCHEME = re.compile(r"^\s*(Bearer|Token|Basic)\s+(\S+)\s*$", re.IGNORECASE)


def is_open(tokens: list[Token]) -> bool:
    """Open mode: no token grants anything but sql, so callers need none (loopback only)."""
    return not any(token.principal.permissions - {"sql"} for token in tokens)


def may_see_everything(principal: Principal) -> bool:
    """A caller that can read every organisation's events anyway (no forced filter)."""
    return not principal.forced_filters and bool(principal.permissions & {"export", "dashboards", "sql"})


def authenticate(tokens: list[Token], authorization: str | None) -> Principal | None:
    """The principal whose secret the Authorization header carries, or None."""
    match = _SCHEME.match(authorization or "")
    if not match:
        return None
    offered = match.group(2).encode()
    if match.group(1).lower() == "basic":
        try:
            offered = base64.b64decode(offered, validate=True).partition(b":")[2]
        except ValueError:
            return None
    found = None
    for token in tokens:  # every token is compared: no early exit
        if hmac.compare_digest(offered, token.secret):
            found = token.principal
    return found


def apply_forced_filters(principal: Principal, query: dict[str, list[str]]) -> dict[str, list[str]]:
    """The export's query with the caller's forced filters set; Forbidden on a conflict.

    Every value given for a forced key must be that key's forced value (so
    `org_id=7&org_id=8` is refused, not resolved by whichever value wins)."""
    query = dict(query)
    for key, forced in principal.forced_filters.items():
        for value in query.get(key, []):
            text = value.strip()
            if not (text.isascii() and text.isdigit() and int(text) == forced):
                raise Forbidden(f"You don't have permission to view events with {key}={value[:40]}")
        query[key] = [str(forced)]
    return query
