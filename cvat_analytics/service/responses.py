"""What `serve` answers with, on the wire: one Response type, JSON answers, and the
status line with headers (http.py writes them; overflow.py answers past the cap).

A body is bytes, a file (streamed, its size from fstat), or a `Stream`: pieces sent
with chunked transfer encoding as they come. A Stream that raises `StreamCut` ends
without the terminating zero-length chunk and the connection is closed, so every
HTTP client sees a broken transfer, never a whole answer."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import BinaryIO, Iterator, Protocol


class Stream(Protocol):
    """A body sent as it is produced; closed once sent (or not sent)."""

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class StreamCut(Exception):
    """Raised by a Stream's iterator: the answer was cut; the receiver must not take it as whole."""


@dataclass
class Response:
    status: int
    body: bytes | BinaryIO | Stream = b""  # a file or a Stream is sent as it is read, then closed
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    events: int = 0  # for the access log


def json_response(status: int, data: dict, events: int = 0, **headers: str) -> Response:
    return Response(status, json.dumps(data).encode() + b"\n", headers=headers, events=events)


SERVER = "cvat-analytics"  # no versions: they only help someone looking for a known hole


def encode_head(response: Response, length: int | None, close: bool, date: str) -> bytes:
    """The status line and headers of `response`, as bytes; `length` None: chunked."""
    headers = {"Server": SERVER, "Date": date, "Content-Type": response.content_type, **response.headers}
    if length is None:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(length)
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
