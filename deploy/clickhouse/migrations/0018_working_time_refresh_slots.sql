-- reapply: on-change
-- The working-time refresh recomputes a changed user from the slot of their earliest new
-- event (working_time.refresh_slot_s), not from its hour, so a run's cost follows what
-- arrived since the last one wherever in the hour it runs: per-slot totals and
-- checkpoints, and the events each run recomputed in its log row (docs/working-time-and-sql.md,
-- "The refresh"; slot_objects in queries/working_time.jinja). The slot size is part of
-- the rule: the first run after this migration recomputes everything, a bucket at a time.
-- It holds the spec's rule, interval and limits, so it is applied again when they change.
DROP VIEW IF EXISTS `cvat`.working_time_refresh;
DROP VIEW IF EXISTS `cvat`.working_time_refresh_plan;

DROP TABLE IF EXISTS `cvat`.working_time_plan;

-- Per user, slot and credited (project, task, job): the ms counted at events in that slot,
-- as deltas (read as sum ... GROUP BY). What a run subtracts from the slot it starts at on.
-- Read only for the current and the previous hour; kept a day.
CREATE TABLE IF NOT EXISTS `cvat`.working_time_slot_totals
(
    user_id UInt64,
    slot DateTime('Etc/UTC'),
    project_id Nullable(UInt64),
    task_id Nullable(UInt64),
    job_id Nullable(UInt64),
    working_time_ms Int64
)
ENGINE = SummingMergeTree
ORDER BY (user_id, slot, project_id, task_id, job_id)
TTL slot + INTERVAL 1 DAY
SETTINGS allow_nullable_key = 1;

-- Per user and slot with events: the running end after the slot's last event and that
-- event's ids, as working_time_checkpoints holds per hour.
CREATE TABLE IF NOT EXISTS `cvat`.working_time_slot_checkpoints
(
    user_id UInt64,
    slot DateTime('Etc/UTC'),
    run_end_ms Int64,
    last_job_id Nullable(UInt64),
    last_task_id Nullable(UInt64),
    last_project_id Nullable(UInt64),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (user_id, slot)
TTL slot + INTERVAL 1 DAY;

ALTER TABLE `cvat`.working_time_apply
    MODIFY COLUMN kind Enum8('total' = 1, 'checkpoint' = 2, 'run' = 3, 'slot_total' = 4, 'slot_checkpoint' = 5),
    ADD COLUMN IF NOT EXISTS recomputed_events UInt64;

-- A run row also says how many events it recomputed: what its cost follows.
ALTER TABLE `cvat`.working_time_refresh_log ADD COLUMN IF NOT EXISTS recomputed_events UInt64;

CREATE MATERIALIZED VIEW IF NOT EXISTS `cvat`.working_time_apply_slot_totals TO `cvat`.working_time_slot_totals AS
SELECT user_id, hour AS slot, project_id, task_id, job_id, working_time_ms
FROM `cvat`.working_time_apply
WHERE kind = 'slot_total';

CREATE MATERIALIZED VIEW IF NOT EXISTS `cvat`.working_time_apply_slot_checkpoints TO `cvat`.working_time_slot_checkpoints AS
SELECT user_id, hour AS slot, run_end_ms, job_id AS last_job_id, task_id AS last_task_id,
       project_id AS last_project_id, version
FROM `cvat`.working_time_apply
WHERE kind = 'slot_checkpoint';

DROP VIEW IF EXISTS `cvat`.working_time_apply_log;

CREATE MATERIALIZED VIEW `cvat`.working_time_apply_log TO `cvat`.working_time_refresh_log AS
SELECT now64(6, 'UTC') AS refreshed_at, watermark, rule, full, users, full_bucket, full_buckets, failures, error,
       recomputed_events
FROM `cvat`.working_time_apply
WHERE kind = 'run';

-- In two views (plan_select above): the plan of a run, replaced by each run of
-- working_time_refresh_plan, then applied by working_time_refresh right after it.
CREATE TABLE `cvat`.working_time_plan
(
    planned_at DateTime64(6, 'UTC'),
    action String,
    bucket Int32,
    buckets UInt32,
    logged DateTime64(6, 'Etc/UTC'),
    logged_rule String,
    logged_bucket Int32,
    logged_buckets UInt32,
    logged_failures UInt32,
    run_error String,
    run_users Array(Tuple(UInt64, DateTime('Etc/UTC'), UInt8, Int64, Nullable(UInt64), Nullable(UInt64), Nullable(UInt64)))
)
ENGINE = MergeTree
ORDER BY planned_at;

-- working_time_refresh_plan runs working_time_refresh_plan_query on its schedule: a plain view, so the engine analyses the
-- query once a run, not twice. refresh_retries = 0: the next run takes a failed one again.
DROP VIEW IF EXISTS `cvat`.working_time_refresh_plan_query;

CREATE VIEW `cvat`.working_time_refresh_plan_query AS
WITH
    -- the last logged run (a failure's row keeps the watermark of the run before it)
    (SELECT argMax((watermark, rule, full_bucket, full_buckets, failures, refreshed_at), (watermark, refreshed_at))
     FROM `cvat`.working_time_refresh_log) AS logged_run,
    logged_run.1 AS logged, logged_run.2 AS logged_rule, logged_run.3 AS logged_bucket,
    logged_run.4 AS logged_buckets, logged_run.5 AS logged_failures, logged_run.6 AS logged_at,
    -- the failure of any of the run's views: a plan that failed is never applied (its
    -- applying view waits for it), so the next plan records it, as it does the application's
    (SELECT anyIf(exception, exception != '') FROM system.view_refreshes
     WHERE database = 'cvat'
       AND view IN ('working_time_refresh_plan', 'working_time_refresh')) AS last_error,
    now64(6, 'UTC') AS run_until,
    -- CVAT's history adopted without a stamp ends at this block (0: none adopted): no row of
    -- a block at or below it is new; a part whose name ends at or below it is not even read
    -- (docs/cvat-stack.md, "Adopting CVAT's history")
    ifNull((SELECT toUInt64OrZero(extract(comment, 'blocks up to ([0-9]+)')) FROM system.columns
            WHERE database = 'cvat' AND table = 'events'
              AND name = 'inserted_at'), 0) AS adopted_block,
    -- record a failure, wait out the back-off after one, or work. Not a failure: the run a
    -- process starts as it opens the store, before the engine has attached system.view_refreshes,
    -- fails on reading it (UNKNOWN_TABLE, seen in make test and serve's start); nothing of the
    -- store is wrong, so the next run works instead of backing off. Nor a run stopped by
    -- someone (SYSTEM STOP VIEW, KILL QUERY: the exception is 'cancelled'): the next run works.
    multiIf(last_error != '' AND last_error != 'cancelled'
            AND position(last_error, 'Unknown table expression identifier \'system.view_refreshes\'') = 0, 'record',
            logged_failures > 0 AND run_until < logged_at + toIntervalSecond(toUInt32(least(
                10 * exp2(least(logged_failures, 30) - 1),
                600))), 'wait',
            'work') AS action,
    -- the bucket of users of a full recompute this run does (-1: none), and how many there are
    toInt32(multiIf(action != 'work', -1,
                    logged_rule != '[100000, ["change:frame"], 60]', 0,
                    logged_bucket >= 0 AND logged_bucket + 1 < logged_buckets, logged_bucket + 1,
                    -1)) AS bucket,
    toUInt32(multiIf(bucket < 0, 0,
                     logged_rule != '[100000, ["change:frame"], 60]',
                     greatest(1, ceil((SELECT count() FROM `cvat`.events) / 1000000)),
                     logged_buckets)) AS buckets,
    if(action = 'work', logged - toIntervalSecond(60), run_until) AS run_since,
    -- the users with new client events, from the slot of their earliest one (from its hour
    -- before the slot horizon and in a full recompute); every user of this run's bucket
    -- from their first event; those of later buckets wait for theirs
    changed AS
    (
        SELECT user_id,
               if(bucket < 0 AND (toStartOfHour(toDateTime(min(timestamp), 'Etc/UTC')) AS first_hour) >= (toStartOfHour(run_until) - toIntervalHour(1)),
                  toStartOfInterval(toDateTime(min(timestamp), 'Etc/UTC'), toIntervalSecond(60)), first_hour) AS from_slot
        FROM
        (
            -- two reads, not one with OR: the first skips by the inserted_at index, the
            -- second reads nothing outside a full recompute
            SELECT
                assumeNotNull(user_id) AS user_id, timestamp, scope, duration, job_id, task_id, project_id,
                toUnixTimestamp64Milli(timestamp) AS ts,
                ts + if(scope IN ('change:frame'), toInt64(duration), 0) AS end_ms
            FROM
            (
                -- filtered before user_id is renamed to its non-Nullable self
                SELECT user_id, timestamp, scope, duration, job_id, task_id, project_id
                FROM `cvat`.events
                WHERE source = 'client' AND user_id IS NOT NULL AND (inserted_at > run_since AND inserted_at <= run_until
            AND (adopted_block = 0 OR (toUInt64(splitByChar('_', _part)[3]) > adopted_block AND _block_number > adopted_block)))
            )
            UNION ALL
            SELECT
                assumeNotNull(user_id) AS user_id, timestamp, scope, duration, job_id, task_id, project_id,
                toUnixTimestamp64Milli(timestamp) AS ts,
                ts + if(scope IN ('change:frame'), toInt64(duration), 0) AS end_ms
            FROM
            (
                -- filtered before user_id is renamed to its non-Nullable self
                SELECT user_id, timestamp, scope, duration, job_id, task_id, project_id
                FROM `cvat`.events
                WHERE source = 'client' AND user_id IS NOT NULL AND (bucket >= 0 AND cityHash64(user_id) % buckets = bucket)
            )
        )
        WHERE NOT (bucket >= 0 AND cityHash64(user_id) % buckets > bucket)
        GROUP BY user_id
    ),
    -- each changed user with the state after their events before from_slot: the last
    -- per-slot checkpoint earlier in from_slot's hour, else the hourly one before that hour
    -- (one LEFT JOIN, so `changed` is read once here: every reference to a CTE runs it again)
    users AS
    (
        SELECT
            c.user_id AS user_id, any(c.from_slot) AS from_slot, toStartOfHour(from_slot) AS from_hour,
            -- a checkpoint before from_slot: a slot's earlier in its hour, or an hour's before it
            toUInt8(countIf((k.through > 0 AND if(k.of_slot = 1,
                k.at >= toStartOfHour(c.from_slot) AND k.at < c.from_slot,
                k.at < toStartOfHour(c.from_slot))) AS before_start) > 0) AS has_prev,
            argMaxIf((k.run_end_ms, k.last_job_id, k.last_task_id, k.last_project_id), k.through, before_start) AS last,
            if(has_prev = 1, last.1, 0) AS c_end, last.2 AS c_job, last.3 AS c_task, last.4 AS c_project
        FROM changed AS c
        LEFT JOIN
        (
            SELECT user_id, toUInt8(0) AS of_slot, hour AS at, toUInt32(hour) + 3600 AS through, run_end_ms,
                   last_job_id, last_task_id, last_project_id
            FROM `cvat`.working_time_checkpoints FINAL
            UNION ALL
            SELECT user_id, 1, slot, toUInt32(slot) + 60, run_end_ms,
                   last_job_id, last_task_id, last_project_id
            FROM `cvat`.working_time_slot_checkpoints FINAL
            WHERE slot >= (toStartOfHour(run_until) - toIntervalHour(1))
        ) AS k ON c.user_id = k.user_id
        GROUP BY c.user_id
    )
-- one row, even with no user (an aggregate without GROUP BY)
SELECT
    run_until AS planned_at, action, bucket, buckets, logged, logged_rule, logged_bucket, logged_buckets,
    logged_failures, ifNull(last_error, '') AS run_error,
    groupArray((user_id, from_slot, has_prev, c_end, c_job, c_task, c_project)) AS run_users
FROM users;

CREATE MATERIALIZED VIEW `cvat`.working_time_refresh_plan
REFRESH EVERY 10 SECOND
SETTINGS refresh_retries = 0
TO `cvat`.working_time_plan AS
SELECT * FROM `cvat`.working_time_refresh_plan_query
SETTINGS
    max_threads = 1,
    max_memory_usage = 1073741824,
    max_bytes_before_external_group_by = 134217728,
    max_bytes_before_external_sort = 134217728;

-- working_time_refresh runs working_time_refresh_query on its schedule: a plain view, so the engine analyses the
-- query once a run, not twice. refresh_retries = 0: the next run takes a failed one again.
DROP VIEW IF EXISTS `cvat`.working_time_refresh_query;

CREATE VIEW `cvat`.working_time_refresh_query AS
WITH
    (SELECT argMax((planned_at, action, bucket, buckets, logged, logged_rule, logged_bucket, logged_buckets,
                    logged_failures, run_error, length(run_users)), planned_at)
     FROM `cvat`.working_time_plan) AS plan,
    plan.1 AS run_until,
    -- the plan's users, read as rows (not in the scalar above: a constant is copied into every
    -- expression that uses it)
    users AS
    (
        SELECT u.1 AS user_id, u.2 AS from_slot, toStartOfHour(from_slot) AS from_hour, u.3 AS has_prev,
               u.4 AS c_end, u.5 AS c_job, u.6 AS c_task, u.7 AS c_project
        FROM `cvat`.working_time_plan
        ARRAY JOIN run_users AS u
        WHERE planned_at = run_until
    ),
    -- work only on a plan not applied yet, read whole (the next plan's run may replace the
    -- table while this one starts: then its users are not all here, and the next run works)
    if(run_until > (SELECT max(watermark) FROM `cvat`.working_time_refresh_log)
       AND (SELECT count() FROM users) = plan.11, plan.2, 'wait') AS action,
    -- not Nullable, as in run_decision (a scalar subquery's columns are)
    assumeNotNull(plan.3) AS bucket, assumeNotNull(plan.4) AS buckets, assumeNotNull(plan.5) AS logged,
    assumeNotNull(plan.6) AS logged_rule, assumeNotNull(plan.7) AS logged_bucket,
    assumeNotNull(plan.8) AS logged_buckets, assumeNotNull(plan.9) AS logged_failures,
    assumeNotNull(plan.10) AS last_error,
    changed AS (SELECT user_id, from_slot FROM users),
    -- the events this run reads to recompute (its log row's recomputed_events), and the
    -- backlog: those of them before the slot horizon (history loaded or backfilled since the
    -- last run: steady ingest has none), but a full recompute's bucket's. An upper bound
    -- (other changed users' events read along with one user's late one count too): each
    -- user's own, a join with changed, cost +0.5 CPU-s a run. Past refresh_chunk_events the
    -- run recomputes nothing and logs 'recompute all', so the next run starts a full
    -- recompute, whose runs read about that many each: one run over it all would need
    -- memory in proportion (10M events: past 1 GiB, failing again after every back-off).
    -- (greatest: with no bucket, buckets is 0, and read from the plan, as in apply_select, the
    -- engine no longer folds `bucket >= 0 AND` away before it sees a division by zero)
    (SELECT (count(), countIf(timestamp < (toStartOfHour(run_until) - toIntervalHour(1)) AND NOT (bucket >= 0 AND cityHash64(user_id) % greatest(buckets, 1) = bucket)))
     FROM (SELECT
         assumeNotNull(user_id) AS user_id, timestamp, scope, duration, job_id, task_id, project_id,
         toUnixTimestamp64Milli(timestamp) AS ts,
         ts + if(scope IN ('change:frame'), toInt64(duration), 0) AS end_ms
     FROM
     (
         -- filtered before user_id is renamed to its non-Nullable self
         SELECT user_id, timestamp, scope, duration, job_id, task_id, project_id
         FROM `cvat`.events
         WHERE source = 'client' AND user_id IS NOT NULL AND (user_id IN (SELECT user_id FROM changed) AND timestamp >= (SELECT min(from_slot) FROM changed))
     ))) AS recompute,
    recompute.2 > 1000000 AS too_large,
    -- the rule over each changed user's events from their from_slot on
    stage AS
    (
        SELECT
            *,
            if(has_prev, greatest(c_end, prev_max), if(rn = 1, ts, prev_max)) AS p_end,
            if(ts > p_end AND ts - p_end < 100000, ts - p_end, 0)
                + greatest(end_ms - greatest(p_end, ts), 0) AS working_time_ms,
            if(rn = 1, if(has_prev, c_job, job_id), lag_job) AS credited_job_id,
            if(rn = 1, if(has_prev, c_task, task_id), lag_task) AS credited_task_id,
            if(rn = 1, if(has_prev, c_project, project_id), lag_project) AS credited_project_id
        FROM
        (
            SELECT
                e.*,
                ifNull(c.has_prev, 0) AS has_prev, c.c_end AS c_end,
                c.c_job AS c_job, c.c_task AS c_task, c.c_project AS c_project,
                row_number() OVER w_lag AS rn,
                -- ROWS, not RANGE: a tied event must not see its own or a later peer's end.
                max(e.end_ms) OVER w_before AS prev_max,
                lagInFrame(e.job_id) OVER w_lag AS lag_job,
                lagInFrame(e.task_id) OVER w_lag AS lag_task,
                lagInFrame(e.project_id) OVER w_lag AS lag_project
            FROM (SELECT e.* FROM (SELECT
            assumeNotNull(user_id) AS user_id, timestamp, scope, duration, job_id, task_id, project_id,
            toUnixTimestamp64Milli(timestamp) AS ts,
            ts + if(scope IN ('change:frame'), toInt64(duration), 0) AS end_ms
        FROM
        (
            -- filtered before user_id is renamed to its non-Nullable self
            SELECT user_id, timestamp, scope, duration, job_id, task_id, project_id
            FROM `cvat`.events
            WHERE source = 'client' AND user_id IS NOT NULL AND (user_id IN (SELECT user_id FROM changed) AND timestamp >= (SELECT min(from_slot) FROM changed) AND NOT too_large)
        )) AS e
              INNER JOIN users AS s ON e.user_id = s.user_id
              WHERE e.timestamp >= s.from_slot) AS e
            LEFT JOIN (SELECT user_id, has_prev, c_end, c_job, c_task, c_project FROM users WHERE has_prev = 1) AS c ON e.user_id = c.user_id
            WINDOW
                w_before AS (PARTITION BY e.user_id ORDER BY e.ts, e.end_ms, e.scope, ifNull(e.job_id, 0), ifNull(e.task_id, 0), ifNull(e.project_id, 0)
                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                w_lag AS (PARTITION BY e.user_id ORDER BY e.ts, e.end_ms, e.scope, ifNull(e.job_id, 0), ifNull(e.task_id, 0), ifNull(e.project_id, 0)
                          ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
        )
    )
SELECT *
FROM
(
    -- One pass over `stage` (each reference to it would recompute it), fanned out to 1 the
    -- per-slot totals, 2 the hourly ones (per credited ids), 3 the per-slot checkpoints and
    -- 4 the hourly ones (per user and slot or hour: the running end after it, its last ids).
    -- Totals: to each slot from from_slot on, new minus stored; to each hour from from_hour
    -- on, new (plus, in from_hour, the stored slots before from_slot) minus stored.
    SELECT
        multiIf(x.1 = 1, 'slot_total', x.1 = 2, 'total', x.1 = 3, 'slot_checkpoint', 'checkpoint') AS kind,
        user_id, x.2 AS hour,
        if(x.1 <= 2, x.4, (argMax((ev_job, ev_task, ev_project), rn) AS last_ids).3) AS project_id,
        if(x.1 <= 2, x.5, last_ids.2) AS task_id,
        if(x.1 <= 2, x.6, last_ids.1) AS job_id,
        if(x.1 <= 2, sum(x.3), 0) AS working_time_ms,
        if(x.1 <= 2, 0, greatest(max(start_end),
            max(max(end_ms)) OVER (PARTITION BY x.1, user_id ORDER BY x.2 ROWS UNBOUNDED PRECEDING))) AS run_end_ms,
        if(x.1 <= 2, 0, toUInt64(toUnixTimestamp64Micro(run_until))) AS version,
        run_until AS watermark, '' AS rule, toUInt8(bucket >= 0) AS full,
        0 AS users, toInt32(-1) AS full_bucket, toUInt32(0) AS full_buckets, toUInt32(0) AS failures, '' AS error,
        toUInt64(0) AS recomputed_events
    FROM
    (
        SELECT user_id, rn, end_ms, job_id AS ev_job, task_id AS ev_task, project_id AS ev_project,
               if(has_prev = 1, ifNull(c_end, 0), toInt64(0)) AS start_end,
               toStartOfInterval(toDateTime(timestamp, 'Etc/UTC'), toIntervalSecond(60)) AS slot,
               [(toUInt8(1), toDateTime(slot, 'Etc/UTC'), toInt64(working_time_ms), CAST(credited_project_id, 'Nullable(UInt64)'), CAST(credited_task_id, 'Nullable(UInt64)'), CAST(credited_job_id, 'Nullable(UInt64)')),
                (toUInt8(2), toDateTime(toStartOfHour(slot), 'Etc/UTC'), toInt64(working_time_ms), CAST(credited_project_id, 'Nullable(UInt64)'), CAST(credited_task_id, 'Nullable(UInt64)'), CAST(credited_job_id, 'Nullable(UInt64)')),
                (toUInt8(3), toDateTime(slot, 'Etc/UTC'), toInt64(0), CAST(NULL, 'Nullable(UInt64)'), CAST(NULL, 'Nullable(UInt64)'), CAST(NULL, 'Nullable(UInt64)')), (toUInt8(4), toDateTime(toStartOfHour(slot), 'Etc/UTC'), toInt64(0), CAST(NULL, 'Nullable(UInt64)'), CAST(NULL, 'Nullable(UInt64)'), CAST(NULL, 'Nullable(UInt64)'))] AS targets
        FROM stage
        UNION ALL
        SELECT t.user_id, toUInt64(0), toInt64(0), NULL, NULL, NULL, toInt64(0), t.slot,
               if(t.slot >= s.from_slot,
                  [(toUInt8(1), toDateTime(t.slot, 'Etc/UTC'), toInt64(-t.working_time_ms), CAST(t.project_id, 'Nullable(UInt64)'), CAST(t.task_id, 'Nullable(UInt64)'), CAST(t.job_id, 'Nullable(UInt64)'))],
                  [(toUInt8(2), toDateTime(toStartOfHour(t.slot), 'Etc/UTC'), toInt64(t.working_time_ms), CAST(t.project_id, 'Nullable(UInt64)'), CAST(t.task_id, 'Nullable(UInt64)'), CAST(t.job_id, 'Nullable(UInt64)'))])
        FROM `cvat`.working_time_slot_totals AS t
        INNER JOIN users AS s ON t.user_id = s.user_id
        WHERE t.slot >= (toStartOfHour(run_until) - toIntervalHour(2)) AND t.slot >= s.from_hour AND NOT too_large
        UNION ALL
        SELECT t.user_id, toUInt64(0), toInt64(0), NULL, NULL, NULL, toInt64(0), t.hour,
               [(toUInt8(2), toDateTime(t.hour, 'Etc/UTC'), toInt64(-t.working_time_ms), CAST(t.project_id, 'Nullable(UInt64)'), CAST(t.task_id, 'Nullable(UInt64)'), CAST(t.job_id, 'Nullable(UInt64)'))]
        FROM `cvat`.working_time_totals AS t
        INNER JOIN users AS s ON t.user_id = s.user_id
        -- the first two conditions only let the primary key skip the other users and hours
        WHERE t.user_id IN (SELECT user_id FROM changed) AND t.hour >= (SELECT toStartOfHour(min(from_slot)) FROM changed)
          AND t.hour >= s.from_hour AND NOT too_large
    )
    ARRAY JOIN targets AS x
    GROUP BY x.1, user_id, x.2, x.4, x.5, x.6
    HAVING x.1 >= 3 OR sum(x.3) != 0
    UNION ALL
    -- the run: how far it got, under which rule, which bucket of a full recompute, how many
    -- events it read to recompute; or the failure of the attempt before it (nothing while a
    -- back-off is waited out)
    SELECT
        'run', 0, toDateTime(0, 'Etc/UTC'), NULL, NULL, NULL, 0, 0, 0,
        if(action = 'work' AND NOT too_large, run_until, logged),
        if(action = 'work', if(too_large, 'recompute all', '[100000, ["change:frame"], 60]'), logged_rule), toUInt8(bucket >= 0),
        (SELECT count() FROM changed),
        if(action = 'work', bucket, logged_bucket), if(action = 'work', buckets, logged_buckets),
        if(action = 'work', 0, logged_failures + 1), if(action = 'work', '', last_error),
        if(action = 'work', recompute.1, 0)
    WHERE action != 'wait'
);

CREATE MATERIALIZED VIEW `cvat`.working_time_refresh
REFRESH EVERY 10 SECOND
DEPENDS ON `cvat`.working_time_refresh_plan
SETTINGS refresh_retries = 0
APPEND TO `cvat`.working_time_apply AS
SELECT * FROM `cvat`.working_time_refresh_query
SETTINGS
    max_threads = 1,
    max_memory_usage = 1073741824,
    max_bytes_before_external_group_by = 134217728,
    max_bytes_before_external_sort = 134217728
