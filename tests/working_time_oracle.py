"""The working-time rule in plain Python, word for word (docs/architecture.md, Working time): the tests' oracle.

Events are dicts with the columns of <db>.events (timestamp as epoch ms in `ts`).
Per user, client events only, in the documented tie-break order."""
from __future__ import annotations

from collections import defaultdict

THRESHOLD = 100_000
COLLAPSED = frozenset({"change:frame"})


def end_of(e, collapsed=COLLAPSED):
    return e["ts"] + (e["duration"] if e["scope"] in collapsed else 0)


def tie_key(e, collapsed=COLLAPSED):
    return (e["ts"], end_of(e, collapsed), e["scope"], e.get("job_id") or 0,
            e.get("task_id") or 0, e.get("project_id") or 0)


def per_event(events, threshold=THRESHOLD, collapsed=COLLAPSED):
    """[(event, ms added, (job, task, project) credited)] for every counted event."""
    streams = defaultdict(list)
    for e in events:
        if e.get("source") == "client" and e.get("user_id") is not None:
            streams[e["user_id"]].append(e)
    out = []
    for user in sorted(streams):
        stream = sorted(streams[user], key=lambda e: tie_key(e, collapsed))
        prev_end = stream[0]["ts"]
        prev_ids = _ids(stream[0])
        for e in stream:
            added = 0
            if e["ts"] > prev_end:
                gap = e["ts"] - prev_end
                if gap < threshold:
                    added += gap
                prev_end = e["ts"]
            end = end_of(e, collapsed)
            if end > prev_end:
                added += end - prev_end
                prev_end = end
            out.append((e, added, prev_ids))
            prev_ids = _ids(e)
    return out


def _ids(e):
    return (e.get("job_id"), e.get("task_id"), e.get("project_id"))


def totals(events, threshold=THRESHOLD, collapsed=COLLAPSED, since_ms=None, until_ms=None):
    """{(user, project, task, job): ms}, non-zero only; time counted at events in [since, until)."""
    acc = defaultdict(int)
    for e, added, (job, task, project) in per_event(events, threshold, collapsed):
        if since_ms is not None and e["ts"] < since_ms:
            continue
        if until_ms is not None and e["ts"] >= until_ms:
            continue
        acc[(e["user_id"], project, task, job)] += added
    return {k: v for k, v in acc.items() if v}
