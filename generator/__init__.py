"""The renderer, installed as the package `cvat_analytics_generator`: the spec, the Jinja2
templates and dashboard definitions, and everything `render` and `check` do with them. It
imports nothing from the runtime (cvat_analytics); docs/architecture.md, "The rooms"."""
