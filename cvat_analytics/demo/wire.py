"""The demo's wire format: an event as CVAT sends it (to_wire) and as it is stored (to_row).

CVAT's server writes `timestamp` as epoch seconds in a string with microseconds, its UI as
ISO-8601; both send `payload` as a JSON string (see docs/cvat-compatibility.md, "The event contract").
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

UTC = timezone.utc


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _row_ts(ms: int) -> str:
    return "%04d-%02d-%02d %02d:%02d:%02d" % time.gmtime(ms // 1000)[:6] + f".{ms % 1000:03d}"


def to_wire(ev: dict, micros: int = 0) -> dict:
    """The event as CVAT sends it: server -> epoch-seconds string, client -> ISO; payload a JSON string."""
    out = {k: v for k, v in ev.items() if not k.startswith("_")}
    ms = ev["_ts"]
    if ev["source"] == "server":
        out["timestamp"] = f"{ms // 1000}.{ms % 1000:03d}{micros:03d}"
    else:
        out["timestamp"] = _iso(ms)
    out["payload"] = json.dumps(ev["payload"], separators=(",", ":")) if ev["payload"] is not None else None
    return out


_ROW_KEYS = ("scope", "obj_name", "obj_id", "obj_val", "source", "count", "duration", "project_id",
             "task_id", "job_id", "user_id", "user_name", "user_email", "org_id", "org_slug",
             "access_token_id")
_enc = json.encoder.encode_basestring  # C-accelerated JSON string quoting
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _jv(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, str):
        return _enc(v)
    return str(v)


def to_row(ev: dict) -> bytes:
    """One JSONEachRow line for <database>.events (the stored form), built by hand: ~3x json.dumps."""
    ms = ev["_ts"]
    parts = [f'"{k}":{_jv(ev[k])}' for k in _ROW_KEYS]
    parts.append(f'"timestamp":"{_row_ts(ms)}"')
    payload = ev["payload"]
    parts.append('"payload":' + (_enc(_dumps(payload)) if payload is not None else "null"))
    return ("{" + ",".join(parts) + "}\n").encode()
