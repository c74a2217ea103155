"""cvat-analytics runtime: the embedded service, ClickHouse access, import/export, the CLI."""
