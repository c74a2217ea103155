"""One progress line on a terminal: how far, how fast, how long still; nothing elsewhere.

Used by `import`, `demo` and `bench` for their long loops. The line is redrawn in place at
most five times a second and cleared by `close()`, so a log or a pipe never gets it (the
stdlib is enough for that; tqdm would be one more dependency for the same line).
"""
from __future__ import annotations

import sys
import time
from typing import IO

REDRAW_S = 0.2


class Progress:
    """`label: done / total events, rate events/s, m:ss left` — with bytes when reading a file.

    `total` (items) or `total_bytes` gives the time left; without either the line shows
    what is done and the rate.
    """

    def __init__(self, label: str, total: int | None = None, *, total_bytes: int | None = None,
                 unit: str = "events", stream: IO[str] | None = None):
        self.label, self.total, self.total_bytes, self.unit = label, total, total_bytes, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()
        self.shown = 0.0

    def update(self, done: int, done_bytes: int | None = None) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.shown < REDRAW_S:
            return
        self.shown = now
        elapsed = max(now - self.started, 1e-3)
        rate = done / elapsed
        parts = []
        if done_bytes is not None:
            of = f" / {size_text(self.total_bytes)}" if self.total_bytes else ""
            parts.append(f"{size_text(done_bytes)}{of}")
            parts.append(f"{done:,} {self.unit}")
        else:
            of = f" / {self.total:,}" if self.total else ""
            parts.append(f"{done:,}{of} {self.unit}")
        parts.append(f"{rate:,.0f} {self.unit}/s")
        left = None
        if done_bytes and self.total_bytes:
            left = elapsed * (self.total_bytes - done_bytes) / done_bytes
        elif done and self.total:
            left = (self.total - done) / rate
        if left is not None:
            parts.append(f"{duration_text(max(left, 0))} left")
        self.stream.write(f"\r{self.label}: {', '.join(parts)}\033[K")
        self.stream.flush()

    def close(self) -> None:
        """Clear the line, so what is printed next starts on a clean one."""
        if self.enabled and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def size_text(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def duration_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
