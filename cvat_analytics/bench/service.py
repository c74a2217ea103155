"""`cvat-analytics serve` in a process of its own, on a port it picks: for the bench and the tests."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .measure import process_mb

READY_LINE = " serving http"  # what serve logs once it listens (with its URL)


class ServeProcess:
    """serve on 127.0.0.1, port 0 (the kernel's pick, so no race for a "free" port), its log
    in a file (a temporary one unless given); `url` is read from its "serving http://..." line."""

    def __init__(self, dsn: str, spec_path, log: Path | None = None, timeout: float = 120):
        self.own_log = log is None  # removed by stop()
        if log is None:
            fd, log = tempfile.mkstemp(prefix="cvat-analytics-serve-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log)
        self.log = open(self.log_path, "ab")
        self.log_start = self.log.tell()  # a log appended to: an earlier run's "serving" line is not this one's
        # The SQL interface always needs a token: the shipped spec's optional one, filled here.
        self.sql_token = secrets.token_urlsafe(24)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cvat_analytics.cli", "serve", "--spec", str(spec_path), "--dsn", dsn,
             "--host", "127.0.0.1", "--port", "0"],
            stdout=self.log, stderr=self.log, cwd=str(Path(__file__).resolve().parents[2]),
            env={**os.environ, "CVAT_ANALYTICS_TOKEN_SQL": self.sql_token})
        deadline = time.monotonic() + timeout
        while (url := self._logged_url()) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start:\n{self.stop()}")
            time.sleep(0.1)
        self.url = url

    def _logged_url(self) -> str | None:
        for line in self.output()[self.log_start:].splitlines():
            if READY_LINE in line:
                return "http" + line.split(READY_LINE, 1)[1].split()[0]
        return None

    def output(self) -> str:
        """What serve has logged so far."""
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=600) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def rss(self, key: str = "VmRSS") -> float:
        return process_mb(self.proc.pid, key)

    def stop(self) -> str:
        """SIGTERM (serve drains and closes the store), then what it logged."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        output = self.output()
        if self.own_log:
            self.log_path.unlink(missing_ok=True)
        return output
