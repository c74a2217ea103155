"""The alert conditions as serve reports them: /health names the failing ones, /metrics has
a gauge per condition.

The conditions, their SQL and thresholds are the renderer's (cvat_analytics_generator.alerts):
the same statements Grafana's alert rules run, on the same store, so the embedded service
and the Docker stack say the same thing. A condition fails when its value is above its
threshold; serve has no `for` (pending) period: it reports what holds now.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily

from cvat_analytics_generator.alerts import Condition, conditions, firing


@dataclass(frozen=True)
class Reading:
    condition: Condition
    value: float

    @property
    def failing(self) -> bool:
        return firing(self.condition, self.value)


class Alerts:
    """Reads every condition from the engine; an engine error propagates to the caller.
    Readings younger than `max_age_s` are given again (one lock: callers arriving together
    share one reading), so a /health polled every second costs the engine four small
    queries per `max_age_s`, not per call."""

    def __init__(self, client, spec: dict, max_age_s: float = 0.0):
        self.client = client
        self.conditions = conditions(spec)
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._last: tuple[float, list[Reading]] | None = None

    def read(self) -> list[Reading]:
        with self._lock:
            if self._last and time.monotonic() - self._last[0] < self.max_age_s:
                return self._last[1]
            readings = [Reading(c, float(self.client.command(c.sql) or 0)) for c in self.conditions]
            self._last = (time.monotonic(), readings)
            return readings


def alert_gauges(alerts: Alerts):
    """The /metrics families of the conditions: their value and whether each fails."""
    value = GaugeMetricFamily("cvat_analytics_alert_value",
                              "Each alert condition's value (unit in the condition's docs; fails above its threshold)",
                              labels=["condition"])
    threshold = GaugeMetricFamily("cvat_analytics_alert_threshold", "Each alert condition's threshold (from the spec)",
                                  labels=["condition"])
    failing = GaugeMetricFamily("cvat_analytics_alert_failing", "1 when the alert condition holds now, else 0",
                                labels=["condition"])
    for reading in alerts.read():
        name = reading.condition.name
        value.add_metric([name], reading.value)
        threshold.add_metric([name], reading.condition.threshold)
        failing.add_metric([name], 1 if reading.failing else 0)
    return [value, threshold, failing]
