"""`make up` (scripts/up.sh) waits for the real ClickHouse server before it migrates: it
retries `SELECT 1` as the admin until a deadline, and says clearly when the server never
comes. Tested against a real HTTP server on 127.0.0.1 that starts late."""
from __future__ import annotations

import base64
import http.server
import socket
import subprocess
import threading
import time

from tests.conftest import REPO

PASSWORD = "s3cret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ClickHouseLike(http.server.BaseHTTPRequestHandler):
    """Answers `SELECT 1` with 1 for cvat_admin and its password, 401 otherwise."""
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - the stdlib's name
        expected = "Basic " + base64.b64encode(f"cvat_admin:{PASSWORD}".encode()).decode()
        self.seen.append(self.path)
        ok = self.headers.get("Authorization") == expected and "SELECT%201" in self.path
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b"1\n" if ok else b"Authentication failed")

    def log_message(self, *args):
        pass


def wait(port: int, seconds: int) -> subprocess.CompletedProcess:
    # `echo` stands in for the compose command whose logs are shown on failure.
    script = (f"source scripts/up.sh; CLICKHOUSE_ADMIN_PASSWORD={PASSWORD} CLICKHOUSE_WAIT_SECONDS={seconds} "
              f"wait_for_clickhouse 127.0.0.1 {port} cvat_admin echo compose")
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)


def test_up_waits_for_a_server_that_comes_late_then_goes_on():
    port = _free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _ClickHouseLike)
    starter = threading.Timer(3.0, server.serve_forever)
    started = time.monotonic()
    starter.start()
    try:
        run = wait(port, 30)
    finally:
        server.shutdown()
        starter.cancel()
        server.server_close()
    assert run.returncode == 0, run.stderr
    assert 3.0 <= time.monotonic() - started < 30
    assert any("SELECT%201" in path for path in _ClickHouseLike.seen)


def test_up_gives_up_at_the_deadline_with_a_clear_message_and_the_servers_log():
    port = _free_port()  # nothing listens there
    started = time.monotonic()
    run = wait(port, 3)
    assert run.returncode == 1
    # The deadline is counted in whole seconds (date +%s): at least 2 s of the 3 pass.
    assert 2 <= time.monotonic() - started < 20
    assert f"ClickHouse did not answer SELECT 1 as cvat_admin on http://127.0.0.1:{port} within 3 s" in run.stderr
    assert "CLICKHOUSE_WAIT_SECONDS" in run.stderr
    assert "compose logs --tail 30 clickhouse" in run.stderr


def test_a_wrong_password_is_not_taken_for_a_server_that_is_up():
    port = _free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _ClickHouseLike)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        script = (f"source scripts/up.sh; CLICKHOUSE_ADMIN_PASSWORD=wrong CLICKHOUSE_WAIT_SECONDS=2 "
                  f"wait_for_clickhouse 127.0.0.1 {port} cvat_admin echo compose")
        run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 1 and "did not answer" in run.stderr
