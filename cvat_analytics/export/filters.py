"""The export's query parameters, validated: id filters and the [from, to] window.

What a user gets is CVAT's `/api/events` export (see docs/cvat-compatibility.md, Export):
filters org_id, project_id, task_id, job_id, user_id and a [from, to] window (both
inclusive). A missing `from` is the beginning, a missing `to` is now, as CVAT documents
them since 2.36 ("Default is the minimal time" / "the current time"). With neither,
CVAT 2.36+ starts at the creation date of the filtered job/task/project/org, else at
the beginning; no event of a resource precedes its creation, so the beginning selects
the same rows. A bad value is a FilterError naming the parameter.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from ..times import parse_utc

UTC = timezone.utc
ID_FILTERS = ("org_id", "project_id", "task_id", "job_id", "user_id")
MAX_ID = 2**64 - 1
# DateTime64's range; a window outside it is clamped.
MIN_TIME = datetime(1900, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)


class FilterError(ValueError):
    """A bad query parameter; the HTTP answer is 400 naming it."""

    def __init__(self, param: str, reason: str):
        self.param = param
        self.reason = reason
        super().__init__(f"{param}: {reason}")


@dataclass(frozen=True)
class ExportFilters:
    from_: datetime
    to: datetime
    org_id: int | None = None
    project_id: int | None = None
    task_id: int | None = None
    job_id: int | None = None
    user_id: int | None = None

    def params(self) -> dict:
        """Bound parameters of the export queries' filter."""
        p = {k: getattr(self, k) for k in ID_FILTERS}
        p["from"] = fmt_time(self.from_)
        p["to"] = fmt_time(self.to)
        return p


def fmt_time(value: datetime) -> str:
    """UTC, milliseconds: how ClickHouse and the CSV write DateTime64(3)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def one(query: dict, name: str) -> str | None:
    """A query parameter's value (query: dict of lists, as `parse_qs` gives)."""
    values = query.get(name)
    if not values:
        return None
    if isinstance(values, str):
        return values
    return values[-1]  # like Django's QueryDict.get: the last one wins


def _parse_id(name: str, text: str) -> int:
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,20}", text, re.ASCII):
        raise FilterError(name, f"must be a non-negative integer, got {text[:40]!r}")
    value = int(text)
    if value > MAX_ID:
        raise FilterError(name, f"must be at most {MAX_ID}")
    return value


# "+02:00" arrives as " 02:00" when a client forgets to percent-encode '+'.
_PLUS_AS_SPACE = re.compile(r"^(.*\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


def parse_time(name: str, text: str) -> datetime:
    """ISO 8601 (a date, or a date and time with optional fraction and zone; no zone = UTC)."""
    raw = text.strip()
    candidate = raw
    m = _PLUS_AS_SPACE.match(raw)
    if m and ("T" in raw or raw.count(" ") == 2):
        candidate = f"{m.group(1)}+{m.group(2)}"
    try:
        value = parse_utc(candidate)
    except ValueError:
        raise FilterError(name, f"not an ISO 8601 date or time: {raw[:60]!r}") from None
    return min(max(value, MIN_TIME), MAX_TIME)


def parse_filters(query: dict, now: datetime | None = None) -> ExportFilters:
    """Validate the export's query parameters (dict of lists, as `parse_qs` gives)."""
    ids = {}
    for name in ID_FILTERS:
        text = one(query, name)
        if text is not None:
            ids[name] = _parse_id(name, text)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    from_text, to_text = one(query, "from"), one(query, "to")
    to = parse_time("to", to_text) if to_text is not None else now
    from_ = parse_time("from", from_text) if from_text is not None else MIN_TIME
    if from_ > to:
        raise FilterError("from", f"{fmt_time(from_)} is after to ({fmt_time(to)})")
    return ExportFilters(from_=from_, to=to, **ids)
