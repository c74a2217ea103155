-- Once: the productivity state's next run recomputes everything. Until this migration its runs
-- read their `full` flag as 0 inside the statement (queries/productivity_state.jinja says why),
-- so a store that adopted CVAT's history has no productivity figures of that history; a run
-- with no run logged takes every event.
TRUNCATE TABLE IF EXISTS `cvat`.productivity_refresh_log;
