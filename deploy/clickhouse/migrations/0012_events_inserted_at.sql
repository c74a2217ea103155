-- When each event was inserted: the refresh of working time (0013, README "Working time")
-- finds the users with new events by it, instead of an insert trigger writing one more
-- part per INSERT (working_time_changes_mv, 0004), which cost a quarter of the insert rate.
-- MATERIALIZED, not DEFAULT: `SELECT *` and an INSERT without a column list (CVAT's own
-- code, Vector on CVAT's adopted table, 0007) see CVAT's columns exactly as before.
-- One value per insert's block, interleaved in the sort order: ZSTD(1) stores it best
-- (1M demo events, merged: 0.36 byte per event; DoubleDelta, ZSTD 1.12; LZ4 1.06).
--
-- Rows already stored get the epoch, written into their parts (a part without the column
-- would evaluate the expression when read, and a merge would write the merge's time into
-- it, making old rows look new at every merge): the column comes with the constant epoch,
-- is materialized into every part (the same value on every replica), and only then takes
-- now64(6) for the rows inserted from here on; a merge keeps the stored values.
-- Events inserted since the last refresh were recorded by the trigger, which goes now:
-- so on a store refreshed before, the first refresh after this recomputes everything
-- once (its log gets a row under a rule no run uses, which makes the next run a full
-- one, as a changed rule does); on a fresh store the first refresh is a full one anyway.
-- Run again after its third statement, the second stamps the stored rows with that
-- time instead: they count as new once, which the full run does anyway.
ALTER TABLE `cvat`.events
    ADD COLUMN IF NOT EXISTS `inserted_at` DateTime64(6, 'Etc/UTC') MATERIALIZED toDateTime64(0, 6, 'Etc/UTC') CODEC(ZSTD(1)),
    ADD INDEX IF NOT EXISTS idx_inserted_at inserted_at TYPE minmax GRANULARITY 1;

-- On CVAT's adopted table, whose years of events this would rewrite, migrate runs
-- runtime/events_adoption.sql.j2 instead (docs/cvat-stack.md, "Adopting CVAT's history").
-- name: stamp_stored_rows
ALTER TABLE `cvat`.events MATERIALIZE COLUMN inserted_at, MATERIALIZE INDEX idx_inserted_at
SETTINGS mutations_sync = 2;

ALTER TABLE `cvat`.events
    MODIFY COLUMN `inserted_at` DateTime64(6, 'Etc/UTC') MATERIALIZED now64(6) CODEC(ZSTD(1));

INSERT INTO `cvat`.working_time_refresh_log (refreshed_at, watermark, rule, full, users)
SELECT now64(6), now64(6), 'recompute all: events.inserted_at added (migration 0012)', 0, 0
WHERE (SELECT count() FROM `cvat`.working_time_refresh_log) > 0;

DROP VIEW IF EXISTS `cvat`.working_time_changes_mv;

DROP TABLE IF EXISTS `cvat`.working_time_changes;
