"""CVAT's event CSV export: which rows (filters), how they are written (writer), and
exports run in the background for the HTTP flows (jobs). The HTTP handlers live in
cvat_analytics.service.export_routes."""
from .filters import ExportFilters, FilterError, parse_filters
from .jobs import ExportJobs, ExportLimits, ExportRefused, Job, default_filename, sanitize_filename
from .writer import LimitExceeded, export_to_path, write_csv

__all__ = ["ExportFilters", "FilterError", "parse_filters", "ExportJobs", "ExportLimits", "ExportRefused",
           "Job", "default_filename", "sanitize_filename", "LimitExceeded", "export_to_path", "write_csv"]
