-- reapply: on-change
-- How long vector_metrics keeps a row (0016 created it with 90 days): the spec's
-- vector.metrics.retention_days, applied again whenever it changes. Rows past it go when
-- their parts merge (ttl_only_drop_parts is not set: a part of a month may hold newer rows).
ALTER TABLE `cvat`.vector_metrics MODIFY TTL toDateTime(timestamp) + toIntervalDay(90);
