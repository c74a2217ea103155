"""The service's log: the stdlib's `logging`, one line per record on stderr, as text or JSON.

Loggers: `cvat_analytics.access` (one line per request: time, client address, token
name, method, path without query values, status, events, milliseconds, request id),
`cvat_analytics.service` (start, stop, refresh, export, errors with their stack trace
and the request id the client got as X-Request-Id). Nothing here ever sees a body,
a secret or a password: the access line is built from the fields below only.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO
from urllib.parse import parse_qsl, urlsplit

FORMATS = ("text", "json")
ACCESS = logging.getLogger("cvat_analytics.access")
SERVICE = logging.getLogger("cvat_analytics.service")
# The fields an access record carries (logging's `extra`), in the order the text line shows them.
ACCESS_FIELDS = ("client", "token", "method", "path", "status", "events", "ms", "request_id")
_MAX_PATH = 300


def loggable_path(target: str) -> str:
    """The request target's path, with the names of its query parameters but never
    their values (a value may be a user's id or something pasted by mistake), cut to
    a few hundred characters and with control characters escaped."""
    url = urlsplit(target)
    names = [name for name, _ in parse_qsl(url.query, keep_blank_values=True)]
    text = url.path + ("?" + "&".join(dict.fromkeys(names)) if names else "")
    text = text[:_MAX_PATH]
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def _time(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """`2026-11-29T19:20:00.123Z INFO access 127.0.0.1 local GET /health 200 0 3ms id=...`"""

    def format(self, record: logging.LogRecord) -> str:
        head = f"{_time(record)} {record.levelname} {record.name.rsplit('.', 1)[-1]}"
        if record.name == ACCESS.name:
            r = record.__dict__
            line = (f"{head} {r['client']} {r['token']} {r['method']} {r['path']} {r['status']} "
                    f"{r['events']} {r['ms']}ms id={r['request_id']}")
        else:
            line = f"{head} {record.getMessage()}"
            if getattr(record, "request_id", None):
                line += f" id={record.request_id}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the access fields."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"time": _time(record), "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        for name in ACCESS_FIELDS:
            if name in record.__dict__:
                data[name] = record.__dict__[name]
        if record.exc_info:
            data["stack"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure(log_format: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Send the service's records (INFO and up) to `stream` (stderr) in `log_format`."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r}: expected one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger("cvat_analytics")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    return handler
