-- Representative dashboard panels for `cvat-analytics bench`, with the Grafana
-- macros already expanded over the last 7 days ($__timeFilter -> a timestamp
-- range, $__timeInterval -> 10-minute buckets, a user/job variable -> one id).
-- Each panel has the query on our schema (`ours`) and on CVAT's original schema
-- (`cvat`: ORDER BY timestamp, working time parsed from payload JSON, as CVAT's
-- Management dashboard does). Variables: db, cvat_db, t_from, t_to, user_id, job_id.
-- `kind: user` / `kind: job` panels answer for one user / one job (the ≥ 3× target).

-- panel: Overall activity
-- kind: overview
-- ours:
SELECT toStartOfInterval(timestamp, INTERVAL 600 second) AS t, count() AS events
FROM `{{ db }}`.events
WHERE timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY t ORDER BY t
-- cvat:
SELECT toStartOfInterval(timestamp, INTERVAL 600 second) AS t, count() AS events
FROM `{{ cvat_db }}`.events
WHERE timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY t ORDER BY t

-- panel: User activity (all users)
-- kind: overview
-- ours:
SELECT toStartOfInterval(timestamp, INTERVAL 600 second) AS t, toString(user_id) AS user, count() AS events
FROM `{{ db }}`.events
WHERE timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY t, user ORDER BY t
-- cvat:
SELECT toStartOfInterval(timestamp, INTERVAL 600 second) AS t, toString(user_id) AS user, count() AS events
FROM `{{ cvat_db }}`.events
WHERE timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY t, user ORDER BY t

-- panel: Working time table (all users)
-- kind: overview
-- ours:
SELECT user_id, project_id, task_id, job_id, sum(working_time_ms) / 1000 / 3600 AS hours
FROM `{{ db }}`.working_time_totals
WHERE hour >= toStartOfHour(toDateTime64('{{ t_from }}', 3, 'UTC')) AND hour <= toDateTime64('{{ t_to }}', 3, 'UTC')
GROUP BY user_id, project_id, task_id, job_id
HAVING hours != 0
ORDER BY user_id, project_id, task_id, job_id
-- cvat:
SELECT user_id, user_name, project_id, task_id, job_id,
       sum(JSONExtractUInt(payload, 'working_time')) / 1000 / 3600 AS hours, count() AS activity
FROM `{{ cvat_db }}`.events
WHERE JSONHas(payload, 'working_time') AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY user_id, user_name, project_id, task_id, job_id
ORDER BY user_id, project_id, task_id, job_id

-- panel: Working time (one user)
-- kind: user
-- ours:
SELECT project_id, task_id, job_id, sum(working_time_ms) / 1000 / 3600 AS hours
FROM `{{ db }}`.working_time_totals
WHERE user_id = {{ user_id }}
  AND hour >= toStartOfHour(toDateTime64('{{ t_from }}', 3, 'UTC')) AND hour <= toDateTime64('{{ t_to }}', 3, 'UTC')
GROUP BY project_id, task_id, job_id
ORDER BY project_id, task_id, job_id
-- cvat:
SELECT project_id, task_id, job_id, sum(JSONExtractUInt(payload, 'working_time')) / 1000 / 3600 AS hours
FROM `{{ cvat_db }}`.events
WHERE JSONHas(payload, 'working_time') AND user_id IN ({{ user_id }})
  AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY project_id, task_id, job_id
ORDER BY project_id, task_id, job_id

-- panel: Working time (one job)
-- kind: job
-- ours:
SELECT user_id, sum(working_time_ms) / 1000 / 3600 AS hours
FROM `{{ db }}`.working_time_totals
WHERE job_id = {{ job_id }}
  AND hour >= toStartOfHour(toDateTime64('{{ t_from }}', 3, 'UTC')) AND hour <= toDateTime64('{{ t_to }}', 3, 'UTC')
GROUP BY user_id ORDER BY user_id
-- cvat:
SELECT user_id, sum(JSONExtractUInt(payload, 'working_time')) / 1000 / 3600 AS hours
FROM `{{ cvat_db }}`.events
WHERE JSONHas(payload, 'working_time') AND job_id IN ({{ job_id }})
  AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY user_id ORDER BY user_id

-- panel: User activity (one user)
-- kind: user
-- ours:
SELECT toStartOfInterval(timestamp, INTERVAL 600 second) AS t, count() AS events
FROM `{{ db }}`.events
WHERE user_id = {{ user_id }} AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY t ORDER BY t
-- cvat:
SELECT toStartOfInterval(timestamp, INTERVAL 600 second) AS t, count() AS events
FROM `{{ cvat_db }}`.events
WHERE (-1 IN ({{ user_id }}) OR user_id IN ({{ user_id }})) AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY t ORDER BY t

-- panel: Events by scope (one user)
-- kind: user
-- ours:
SELECT scope, source, count() AS events, avg(duration) AS avg_ms
FROM `{{ db }}`.events
WHERE user_id = {{ user_id }} AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY scope, source ORDER BY events DESC
-- cvat:
SELECT scope, source, count() AS events, avg(duration) AS avg_ms
FROM `{{ cvat_db }}`.events
WHERE user_id IN ({{ user_id }}) AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY scope, source ORDER BY events DESC

-- panel: Events by scope (one job)
-- kind: job
-- ours:
SELECT scope, source, count() AS events, avg(duration) AS avg_ms
FROM `{{ db }}`.events
WHERE job_id = {{ job_id }} AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY scope, source ORDER BY events DESC
-- cvat:
SELECT scope, source, count() AS events, avg(duration) AS avg_ms
FROM `{{ cvat_db }}`.events
WHERE job_id IN ({{ job_id }}) AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY scope, source ORDER BY events DESC

-- panel: All events (latest 1000)
-- kind: overview
-- ours:
SELECT * FROM `{{ db }}`.events
WHERE timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
ORDER BY timestamp DESC LIMIT 1000
-- cvat:
SELECT * FROM `{{ cvat_db }}`.events
WHERE timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
ORDER BY timestamp DESC LIMIT 1000

-- panel: Number of events / duration by scope
-- kind: overview
-- ours:
SELECT scope, source, count() AS events, avg(duration) AS avg_ms, min(duration) AS min_ms, max(duration) AS max_ms
FROM `{{ db }}`.events
WHERE timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY scope, source ORDER BY events DESC
-- cvat:
SELECT scope, source, count() AS events, avg(duration) AS avg_ms, min(duration) AS min_ms, max(duration) AS max_ms
FROM `{{ cvat_db }}`.events
WHERE timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY scope, source ORDER BY events DESC

-- panel: Active users (15 min)
-- kind: overview
-- ours:
SELECT toStartOfInterval(timestamp, INTERVAL 15 minute) AS t, uniqExact(user_id) AS users
FROM `{{ db }}`.events
WHERE timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY t ORDER BY t
-- cvat:
SELECT toStartOfInterval(timestamp, INTERVAL 15 minute) AS t, uniqExact(user_id) AS users
FROM `{{ cvat_db }}`.events
WHERE timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
GROUP BY t ORDER BY t

-- panel: Exceptions table
-- kind: overview
-- ours:
SELECT timestamp, user_id, source, project_id, task_id, job_id,
       JSONExtractString(payload, 'message') AS error, JSONExtractString(payload, 'stack') AS stack, payload
FROM `{{ db }}`.events
WHERE scope = 'send:exception' AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
ORDER BY timestamp DESC LIMIT 1000
-- cvat:
SELECT timestamp, user_id, source, project_id, task_id, job_id,
       JSONExtractString(payload, 'message') AS error, JSONExtractString(payload, 'stack') AS stack, payload
FROM `{{ cvat_db }}`.events
WHERE scope = 'send:exception' AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}'
ORDER BY timestamp DESC LIMIT 1000

-- panel: Browsers
-- kind: overview
-- ours:
SELECT browser, count() AS users FROM (
    SELECT DISTINCT user_id,
           concat(JSON_VALUE(payload, '$.platform.name'), ' ', JSON_VALUE(payload, '$.platform.version')) AS browser
    FROM `{{ db }}`.events
    WHERE scope = 'load:cvat' AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}')
GROUP BY browser ORDER BY users DESC
-- cvat:
SELECT browser, count() AS users FROM (
    SELECT DISTINCT user_id,
           concat(JSON_VALUE(payload, '$.platform.name'), ' ', JSON_VALUE(payload, '$.platform.version')) AS browser
    FROM `{{ cvat_db }}`.events
    WHERE scope = 'load:cvat' AND timestamp >= '{{ t_from }}' AND timestamp <= '{{ t_to }}')
GROUP BY browser ORDER BY users DESC
