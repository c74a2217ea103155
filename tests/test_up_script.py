"""`make up` (scripts/up.sh) waits for the real ClickHouse server before it migrates: it
retries `SELECT 1` as the admin until a deadline, and says clearly when the server never
comes. Tested against a real HTTP server on 127.0.0.1 that starts late. The embedded
`make up` writes the SQL interface's token to .env, starts serve with it and says how to
use it (tested by running it)."""
from __future__ import annotations

import base64
import http.server
import socket
import subprocess
import threading
import time

import pytest

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


@pytest.mark.slow  # `check`'s engine run or a subprocess per step: seconds of CPU
def test_make_up_writes_an_sql_token_starts_serve_with_it_and_says_how_to_use_it(tmp_path):
    """The embedded `make up`, for real: .env gets CVAT_ANALYTICS_TOKEN_SQL, serve reads it,
    /clickhouse answers with it and 401 without, and the output says where it is and how
    to use it without printing the secret."""
    import json
    import os
    import re
    import signal
    import urllib.error
    import urllib.request

    from tests.conftest import write_spec

    port = _free_port()
    _, spec = write_spec(tmp_path, **{"embedded.data_dir": str(tmp_path / "data"), "embedded.port": port})
    env_file = tmp_path / ".env"
    env = {**{k: v for k, v in os.environ.items() if k != "CVAT_ANALYTICS_TOKEN_SQL"},
           "SPEC": str(spec), "ENV_FILE": str(env_file), "UP_STATE": str(tmp_path / ".up")}
    run = subprocess.run(["bash", "-c", "source scripts/up.sh; ensure_env; embedded_up"], capture_output=True,
                         text=True, cwd=REPO, timeout=300, env=env)
    pid_file = tmp_path / "data" / "serve.pid"
    try:
        assert run.returncode == 0, run.stdout + run.stderr
        secret = re.search(r"^CVAT_ANALYTICS_TOKEN_SQL=(\S+)$", env_file.read_text(), re.M).group(1)
        assert len(secret) >= 16 and secret not in run.stdout + run.stderr
        assert f"with the token in {env_file}, variable CVAT_ANALYTICS_TOKEN_SQL" in run.stdout
        # The printed curl line, run as printed, answers.
        [curl] = [line.strip() for line in run.stdout.splitlines() if line.strip().startswith("curl ")]
        assert "Authorization: Bearer $(sed -n" in curl
        shown = subprocess.run(["bash", "-c", curl.replace("curl ", "curl -s ", 1)], capture_output=True,
                               text=True, timeout=30)
        assert shown.stdout == "1\n", shown
        url = f"http://127.0.0.1:{port}/clickhouse/?query=SELECT%201"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        assert "CVAT_ANALYTICS_TOKEN_SQL" in json.loads(refused.value.read())["error"]
        asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})
        assert urllib.request.urlopen(asked, timeout=10).read() == b"1\n"
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            time.sleep(1)


# What the real Docker client (docker info) prints and exits with, per case.
DOCKER_SAYS = {
    "denied": ("permission denied while trying to connect to the Docker daemon socket at "
               "unix:///var/run/docker.sock: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.47/info\": "
               "dial unix /var/run/docker.sock: connect: permission denied", 1),
    "none": ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
             "Is the docker daemon running?", 1),
    "up": ("", 0),
}


@pytest.mark.parametrize("case", ["denied", "none", "up"])
def test_make_up_tells_a_refused_docker_socket_from_no_engine(tmp_path, case):
    """A `docker` on PATH that fails as the real client does: permission denied on the
    socket stops `make up` with a clear message; no engine starts the embedded default;
    an engine that answers starts the Docker stack."""
    import os

    message, code = DOCKER_SAYS[case]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f"#!/bin/sh\necho 'Client:\n Version:    27.5.1'\necho '{message}' >&2\nexit {code}\n")
    docker.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ENV_FILE": str(tmp_path / ".env"),
           "UP_STATE": str(tmp_path / ".up")}
    # The two ways up, stood in for: which one main takes is what is tested.
    script = "source scripts/up.sh; docker_up() { echo STARTED docker; }; embedded_up() { echo STARTED embedded; }; main"
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60, env=env)
    if case == "denied":
        assert run.returncode == 1 and "STARTED" not in run.stdout
        assert "permission denied on the Docker socket" in run.stderr and "docker group" in run.stderr
    else:
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines()[-1] == f"STARTED {'docker' if case == 'up' else 'embedded'}"
