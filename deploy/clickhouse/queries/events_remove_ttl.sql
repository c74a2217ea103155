-- Retention 0 (keep events for ever): `migrate` runs this before migration 0003 when the
-- events table has a TTL in force; ClickHouse refuses it on a table without one.
ALTER TABLE `cvat`.events REMOVE TTL;
