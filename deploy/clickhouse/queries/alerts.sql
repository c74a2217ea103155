-- The alert conditions (generator/alerts.py), one statement each. serve's /health and
-- /metrics run them; Grafana's alert rules carry the same text (rendered from this file
-- into grafana/provisioning/alerting/cvat.yaml). Each returns one row with one number,
-- `value`; a condition fires when value is above its threshold. No Grafana macro and no
-- parameter: Grafana sends the text as it is, serve runs it as it is. Every table read is
-- in the analytics database, which the read-only dashboards user may read; `check` passes
-- each through the SQL gate and runs it read-only.

-- name: events_lost
-- Events Vector's contract refused (sent to the dead-letter file) or a component dropped,
-- in the last alerts.events_lost.window_minutes (counted as the Monitoring panel counts them:
-- Vector's counters restart at 0 with Vector, so a step down is a restart, counted from 0).
SELECT toUInt64(sumIf(increase, (name = 'component_received_events_total' AND component_id = 'dead_letter_events')
                             OR (name = 'component_discarded_events_total' AND tags['intentional'] = 'false'))) AS value
FROM
(
    SELECT name, component_id, tags, timestamp,
           value - lagInFrame(value, 1, 0) OVER series AS step,
           if(step >= 0, step, value) AS increase
    FROM `cvat`.vector_metrics
    WHERE timestamp >= now64(3) - toIntervalMinute(15) - toIntervalHour(1)
    WINDOW series AS (PARTITION BY host, name, component_id, toString(tags) ORDER BY timestamp
                      ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
)
WHERE timestamp >= now64(3) - toIntervalMinute(15);

-- name: vector_silent
-- Seconds since the newest row of Vector's own metrics (one a series every
-- vector.metrics.scrape_interval_secs), 0 when the table has none (the embedded service,
-- or a stack whose Vector never wrote one). Vector's metrics sink logs in as the events
-- sink does: a password ClickHouse refuses stops both, and Vector 0.54 drops each refused
-- batch (vector.yaml says where in its source), so this is the alert that sees it. Read
-- from the parts' min/max index of the partition key's column, not from the rows.
SELECT if(count() = 0, 0, dateDiff('second', max(timestamp), now64(3))) AS value
FROM `cvat`.vector_metrics;

-- name: ingest_stalled
-- Seconds since the newest event was inserted, if at least alerts.ingest_stalled.min_events_before
-- were inserted in the quiet_minutes before the last quiet_minutes, else 0: above quiet_minutes
-- means that none has arrived since while some arrived before.
SELECT if(before >= 1 AND newest >= now64(6) - toIntervalMinute(60),
          dateDiff('second', newest, now64(6)), 0) AS value
FROM
(
    SELECT max(inserted_at) AS newest,
           countIf(inserted_at < now64(6) - toIntervalMinute(30)) AS before
    FROM `cvat`.events
    WHERE inserted_at >= now64(6) - toIntervalMinute(60)
);

-- name: working_time_stale
-- Seconds the oldest event the working-time refresh has not counted yet has waited: the
-- events inserted after the refresh log's last watermark (0 when there is none). The
-- inserted_at skip index leaves out the granules written before the watermark.
SELECT if(count() = 0, 0, dateDiff('second', min(inserted_at), now64(6))) AS value
FROM `cvat`.events
WHERE inserted_at > (SELECT max(watermark) FROM `cvat`.working_time_refresh_log);

-- name: productivity_stale
-- The same for the productivity state (docs/productivity.md, Kept by the engine): its runs
-- log their watermark, and a run that fails logs nothing.
SELECT if(count() = 0, 0, dateDiff('second', min(inserted_at), now64(6))) AS value
FROM `cvat`.events
WHERE inserted_at > (SELECT max(watermark) FROM `cvat`.productivity_refresh_log);

-- name: exception_spike
-- Exceptions (send:exception, from clients and the server) with a timestamp in the last
-- alerts.exception_spike.window_minutes, without exceptions.noise (as the Exceptions dashboard).
SELECT count() AS value
FROM `cvat`.events
WHERE scope = 'send:exception' AND source IN ('client', 'server')
      AND timestamp >= now64(3) - toIntervalMinute(15)
      AND NOT multiSearchAnyCaseInsensitiveUTF8(JSONExtractString(payload, 'message'),
              ['permissiondenied', 'you do not have permission to perform this action', 'django.http.response.http404', 'rest_framework.exceptions.notfound', 'matches the given query.', 'throttled', 'request failed with status code 429', 'authenticationfailed', 'authentication credentials were not provided', 'validationerror:', 'limitreachedexception:', 'rest_framework.exceptions.methodnotallowed', 'cloud storage instance was deleted', 'cvatdatasetnotfounderror', 'no media data found', 'rest_framework.exceptions.notacceptable: could not satisfy the request accept header'])
;
