"""The expander lives with the renderer (cvat_analytics_generator.grafana_macros), whose
`check` runs every dashboard query on the engine; the runtime imports it from there."""
from cvat_analytics_generator.grafana_macros import ALL, Variable, _conditional_all, expand  # noqa: F401
