"""Times as people type them: ISO 8601 in, UTC out (the one parser the CLI, the export
and the dashboards share; ingest checks CVAT's two timestamp forms itself, in events.py)."""
from __future__ import annotations

from datetime import datetime, timezone

UTC = timezone.utc


def parse_utc(text: str) -> datetime:
    """ISO 8601, a date or a date and time (`T` or a space between, any fraction, `Z`, an
    offset, or no zone = UTC) -> an aware UTC datetime; ValueError when it is not one."""
    value = datetime.fromisoformat(text.strip())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sql_text(value: datetime) -> str:
    """'YYYY-MM-DD HH:MM:SS.mmm' in UTC, as a DateTime64(3) parameter takes it."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
