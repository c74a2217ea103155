"""CVAT's working-time loop, ported verbatim: the behaviour the dev tools imitate and measure against.

`compute_working_time_per_ids` is cvat/apps/events/utils.py as CVAT's server runs it on each
batch a client posts (see docs/cvat-compatibility.md, "Working time"): dict events, the previous
batch's last event carried over. The demo uses it to write the `send:working_time` rows CVAT
would write; the bench times it as the baseline our SQL is compared with. Nothing in the
runtime imports this module; it imports nothing from the runtime.
"""
from __future__ import annotations

from datetime import timedelta

MAX_EVENT_DURATION_MS = 100_000
COMPRESSED_EVENT_SCOPES = frozenset({"change:frame"})


def compute_working_time_per_ids(data: dict, ms=timedelta(milliseconds=1)) -> dict:
    """{(job_id, task_id, project_id): {"value": working time, "timestamp": first event's}}.

    `ms` is one millisecond in the type of the events' timestamps: a timedelta for
    datetimes (CVAT's own, the default), 1 for epoch-millisecond ints (the demo's).
    """
    max_event_duration = MAX_EVENT_DURATION_MS * ms

    def read_ids(event: dict):
        return event.get("job_id"), event.get("task_id"), event.get("project_id")

    def get_end_timestamp(event: dict):
        if event["scope"] in COMPRESSED_EVENT_SCOPES:
            return event["timestamp"] + event["duration"] * ms
        return event["timestamp"]

    if previous_event := data["previous_event"]:
        previous_end_timestamp = get_end_timestamp(previous_event)
        previous_ids = read_ids(previous_event)
    elif data["events"]:
        previous_end_timestamp = data["events"][0]["timestamp"]
        previous_ids = read_ids(data["events"][0])

    working_time_per_ids = {}
    for event in data["events"]:
        working_time = 0 * ms
        timestamp = event["timestamp"]
        if timestamp > previous_end_timestamp:
            t_diff = timestamp - previous_end_timestamp
            if t_diff < max_event_duration:
                working_time += t_diff
            previous_end_timestamp = timestamp
        end_timestamp = get_end_timestamp(event)
        if end_timestamp > previous_end_timestamp:
            working_time += end_timestamp - previous_end_timestamp
            previous_end_timestamp = end_timestamp
        if previous_ids not in working_time_per_ids:
            working_time_per_ids[previous_ids] = {"value": 0 * ms, "timestamp": timestamp}
        working_time_per_ids[previous_ids]["value"] += working_time
        previous_ids = read_ids(event)
    return working_time_per_ids
