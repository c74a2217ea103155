"""The progress line: rate and time left on a terminal (a real pty), nothing on a pipe or file."""
from __future__ import annotations

import io
import os
import re

from cvat_analytics.progress import Progress, duration_text


def _terminal():
    """A writable end of a real pseudo-terminal and a reader of what reached it."""
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w")

    def read() -> str:
        stream.flush()
        return os.read(master, 65536).decode()

    return stream, read, master


def test_on_a_terminal_the_line_shows_done_total_rate_and_time_left():
    stream, read, master = _terminal()
    try:
        p = Progress("load", total=1000, stream=stream)
        p.started -= 10  # ten seconds in: 250 done is 25/s, 750 left is 30 s
        p.update(250)
        line = read()
        assert re.search(r"load: 250 / 1,000 events, 25 events/s, 0:30 left", line), line
        p.close()
        assert read().endswith("\r\033[K")  # cleared for what is printed next
    finally:
        stream.close()
        os.close(master)


def test_reading_a_file_the_time_left_follows_the_bytes():
    stream, read, master = _terminal()
    try:
        p = Progress("reading", total_bytes=4 * 1024 * 1024, stream=stream)
        p.started -= 60
        p.update(3000, done_bytes=1024 * 1024)  # a quarter in a minute: three minutes left
        assert re.search(r"reading: 1\.0 MB / 4\.0 MB, 3,000 events, 50 events/s, 3:00 left", read())
    finally:
        stream.close()
        os.close(master)


def test_nothing_when_the_stream_is_not_a_terminal():
    stream = io.StringIO()
    with Progress("demo", total=10, stream=stream) as p:
        p.update(5)
        p.update(10)
    assert stream.getvalue() == ""


def test_duration_text():
    assert [duration_text(s) for s in (0, 59.4, 61, 3600 + 62)] == ["0:00", "0:59", "1:01", "1:01:02"]
