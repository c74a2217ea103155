"""Connections beyond embedded.max_connections: answered quickly by one thread.

Each connection of the HTTP server holds a thread for as long as it is open (an
idle keep-alive connection too). Beyond the cap a connection gets no thread: this
module's one thread reads its request head (WAIT_S at most), answers GET or HEAD
/health as usual and anything else 503 with Retry-After, and closes. A flood of idle
connections (a slowloris) then costs file descriptors, not threads, and /health
keeps answering.
"""
from __future__ import annotations

import email.utils
import queue
import selectors
import socket
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .responses import encode_head, json_response
from .logs import ACCESS

if TYPE_CHECKING:
    from .http import EventServer


class Overflow:
    """The connections the server had no room for, until each is answered."""

    HEAD_LIMIT = 8192
    WAIT_S = 2.0

    def __init__(self, server: "EventServer"):
        self.server = server
        self.selector = selectors.DefaultSelector()
        self.pending: dict[socket.socket, tuple[float, bytearray]] = {}  # socket -> (deadline, head)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_read, self.wake_write = socket.socketpair()
        self.wake_read.setblocking(False)
        self.wake_write.setblocking(False)
        self.selector.register(self.wake_read, selectors.EVENT_READ)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def take(self, sock: socket.socket) -> None:
        with self._start_lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="overflow", daemon=True)
                self.thread.start()
        self.inbox.put(sock)
        self._wake()

    def stop(self) -> None:
        self.stopping.set()
        self._wake()
        if self.thread is not None:
            self.thread.join(10)
        for sock in list(self.pending):
            self._close(sock)
        self.wake_read.close()
        self.wake_write.close()

    def _wake(self) -> None:
        try:
            self.wake_write.send(b"x")
        except OSError:  # the pipe is full: the thread is awake anyway
            pass

    def _run(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(timeout=0.25):
                if key.fileobj is self.wake_read:
                    self._admit()
                else:
                    self._read(key.fileobj)
            now = time.monotonic()
            for sock, (deadline, head) in list(self.pending.items()):
                if now >= deadline:
                    self._answer(sock, head)

    def _admit(self) -> None:
        try:
            while self.wake_read.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                sock = self.inbox.get_nowait()
            except queue.Empty:
                return
            sock.setblocking(False)
            self.pending[sock] = (time.monotonic() + self.WAIT_S, bytearray())
            self.selector.register(sock, selectors.EVENT_READ)

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(sock)
            return
        head = self.pending[sock][1]
        head += data
        if b"\r\n\r\n" in head or len(head) >= self.HEAD_LIMIT:
            self._answer(sock, head)

    def _answer(self, sock: socket.socket, head: bytearray) -> None:
        words = bytes(head).split(b"\r\n", 1)[0].split()
        method = words[0] if words else b""
        path = urlsplit(words[1].decode("latin-1")).path if len(words) >= 2 else ""
        try:
            if method in (b"GET", b"HEAD") and path == "/health":
                response = self.server.brief_health()
            else:
                response = json_response(503, {"error": "the service has embedded.max_connections connections "
                                                         "open: retry shortly"}, **{"Retry-After": "1"})
            body = response.body if isinstance(response.body, bytes) else b""
            data = encode_head(response, len(body), True, email.utils.formatdate(usegmt=True))
            sock.setblocking(True)
            sock.settimeout(1)  # the answer fits in the socket's buffer; a client that reads nothing gets cut
            sock.sendall(data if method == b"HEAD" else data + body)
            # Only what was recognised is logged: the rest may be anyone's bytes.
            health = path == "/health" and method in (b"GET", b"HEAD")
            ACCESS.info("request", extra={"client": "-", "token": "overflow", "method": method.decode() if health else "-",
                                          "path": "/health" if health else "-", "status": response.status,
                                          "events": 0, "ms": 0, "request_id": "-"})
        except Exception:  # a client gone, a store not answering: the connection ends either way
            pass
        finally:
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        self.pending.pop(sock, None)
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        try:
            sock.close()
        except OSError:
            pass
