"""What `serve` answers with, on the wire: one Response type, JSON answers, and the
status line with headers (http.py writes them; overflow.py answers past the cap)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import BinaryIO


@dataclass
class Response:
    status: int
    body: bytes | BinaryIO = b""  # a file is streamed (its size from fstat), then closed
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    events: int = 0  # for the access log


def json_response(status: int, data: dict, events: int = 0, **headers: str) -> Response:
    return Response(status, json.dumps(data).encode() + b"\n", headers=headers, events=events)


SERVER = "cvat-analytics"  # no versions: they only help someone looking for a known hole


def encode_head(response: Response, length: int, close: bool, date: str) -> bytes:
    """The status line and headers of `response`, as bytes."""
    headers = {"Server": SERVER, "Date": date, "Content-Type": response.content_type,
               **response.headers, "Content-Length": str(length)}
    if close:
        headers["Connection"] = "close"
    lines = [f"HTTP/1.1 {response.status} {_phrase(response.status)}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
