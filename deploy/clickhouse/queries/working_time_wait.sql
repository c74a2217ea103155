-- working_time.wait_current: these statements, in this order. Parameter:
-- {since:DateTime64(6, 'UTC')} - a refresh must have started after this time.
-- With `startup` (working_time.refresh_once_the_engine_is_up): the refreshes to start once a
-- process has opened the store, each after the run the engine started at open.

-- now, as the engine tells it
SELECT toString(now64(6, 'UTC'));

-- start each refresh now, out of schedule, and wait for it (raises its error if it fails):
-- on a single server the working time's plan, then the run that applies it
-- (queries/working_time.jinja, plan_select), beside the productivity state's
-- (queries/productivity_state.jinja, independent of it); a shard of the cluster has the one
-- working-time view
SYSTEM REFRESH VIEW `cvat`.working_time_refresh_plan;

SYSTEM WAIT VIEW `cvat`.working_time_refresh_plan;

SYSTEM REFRESH VIEW `cvat`.working_time_refresh;

SYSTEM REFRESH VIEW `cvat`.productivity_refresh;

SYSTEM WAIT VIEW `cvat`.working_time_refresh;

SYSTEM WAIT VIEW `cvat`.productivity_refresh;

-- the last logged run: 1 once it started after `since` and no full recompute is midway
-- (refresh_select in queries/working_time.jinja), and the productivity state's last run
-- started after `since` too; the failed runs in a row it records, if recorded after
-- `since`, and the error
SELECT
    toUInt8(r.1 >= {since:DateTime64(6, 'UTC')} AND (r.2 < 0 OR r.2 + 1 >= r.3) AND r.4 = 0 AND (SELECT max(watermark) FROM `cvat`.productivity_refresh_log) >= {since:DateTime64(6, 'UTC')}),
    if(r.6 >= {since:DateTime64(6, 'UTC')}, r.4, 0), r.5
FROM
(
    SELECT argMax((watermark, full_bucket, full_buckets, failures, error, refreshed_at), (watermark, refreshed_at)) AS r
    FROM `cvat`.working_time_refresh_log
);
