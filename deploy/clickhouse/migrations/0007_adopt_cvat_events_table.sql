-- A CVAT deployment already has its own events table (CVAT's schema, no request_id);
-- CREATE TABLE IF NOT EXISTS left it as it was. Give it what our queries rely on. On a
-- table created by 0002 every statement is a no-op. (Its sort key stays CVAT's: changing
-- that needs a copy into a new table, which is an operator's decision.)
ALTER TABLE `cvat`.events
    ADD COLUMN IF NOT EXISTS `access_token_id` Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS `request_id` String MATERIALIZED JSONExtractString(ifNull(payload, ''), 'request', 'id');

ALTER TABLE `cvat`.events
    ADD INDEX IF NOT EXISTS idx_request_id request_id TYPE bloom_filter(0.001) GRANULARITY 1;
