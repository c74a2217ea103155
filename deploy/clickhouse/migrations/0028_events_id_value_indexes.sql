-- A second minmax index on each id a query filters by, over ifNull(id, 0): the first
-- (0002's, over the Nullable column) counts NULL as larger than every id, so a granule
-- holding one event without the id (most client events have no job) cannot be skipped
-- for any id above its smallest, and ids grow with time: the newest job, the one a
-- refresh or a panel asks about, was never skipped. The engine uses this one for
-- `job_id = X` and `job_id IN (...)` as written (X is not 0, so ifNull(job_id, 0) = X),
-- and the two together bound a granule's ids from both sides. Measured on a 10M-event
-- store whose jobs live three days each (ids growing with time): the 34 jobs of the
-- newest 1,000 server events 1,245 -> 152 of 1,245 granules; the productivity run after
-- them read 11.1M -> 1.8M rows (docs/benchmarks.md).
ALTER TABLE `cvat`.events
    ADD INDEX IF NOT EXISTS idx_job_id_value ifNull(job_id, 0) TYPE minmax GRANULARITY 1,
    ADD INDEX IF NOT EXISTS idx_task_id_value ifNull(task_id, 0) TYPE minmax GRANULARITY 1,
    ADD INDEX IF NOT EXISTS idx_project_id_value ifNull(project_id, 0) TYPE minmax GRANULARITY 1,
    ADD INDEX IF NOT EXISTS idx_org_id_value ifNull(org_id, 0) TYPE minmax GRANULARITY 1;

-- The parts stored now get them too: index files beside the parts' data, which the
-- mutation links, not rewrites (1 s on 10M events). Not on CVAT's adopted table, whose
-- parts migrate leaves as they are (docs/cvat-stack.md, "Adopting CVAT's history"): only
-- the parts written or merged from here on get them (a month merged to the end keeps none).
-- name: index_stored_parts
ALTER TABLE `cvat`.events
    MATERIALIZE INDEX idx_job_id_value, MATERIALIZE INDEX idx_task_id_value,
    MATERIALIZE INDEX idx_project_id_value, MATERIALIZE INDEX idx_org_id_value
SETTINGS mutations_sync = 2;
