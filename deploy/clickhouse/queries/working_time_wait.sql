-- working_time.wait_current: these statements, in this order. Parameter:
-- {since:DateTime64(6, 'UTC')} - a refresh must have started after this time.

-- now, as the engine tells it
SELECT toString(now64(6, 'UTC'));

-- start a refresh now, out of schedule, and wait for it (raises its error if it fails)
SYSTEM REFRESH VIEW `cvat`.working_time_refresh;

SYSTEM WAIT VIEW `cvat`.working_time_refresh;

-- 1 once a refresh that started after `since` has finished
SELECT count() > 0 FROM `cvat`.working_time_refresh_log WHERE watermark >= {since:DateTime64(6, 'UTC')};
