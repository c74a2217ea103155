-- The client's address, which CVAT records from 2.66 (cvat/apps/events/event.py and
-- views.py put `remote_addr` on every server and client event; its Vector forwards it).
-- The column exactly as CVAT's own start-up DDL adds it (components/analytics/clickhouse/
-- init.py, migration_002_add_remote_addr), so whichever of the two runs first, the other
-- finds it and does nothing: on CVAT's adopted table, on ours, for any CVAT release.
-- Metadata only: stored rows read NULL, no part is rewritten. CVAT's CSV export leaves
-- the column out (`SELECT * EXCEPT(remote_addr)`), and so does ours (cvat_analytics.export).
-- A DEFAULT column, not MATERIALIZED: Vector and serve write it. So a CVAT before 2.66 in
-- whose stack this runs reads it with `SELECT *`: its CSV ends in an empty remote_addr
-- column (docs/cvat-compatibility.md, "CVAT releases").
ALTER TABLE `cvat`.events
    ADD COLUMN IF NOT EXISTS `remote_addr` Nullable(String) DEFAULT NULL;
