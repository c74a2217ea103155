-- Which POST / requests `serve` has stored, so that a retried request counts once
-- even when its first try went in with other requests as one insert (group commit,
-- see cvat_analytics/service/ingest.py). One insert carries one deduplication token,
-- so the token of a group lists its requests ("ingest <key> <key> ..."):
--
-- ingest_groups: written first, the group's token and rows (a redo record). After a
--   kill -9 the service replays, at start, every group whose requests are not
--   recorded below, with the same token: ClickHouse's own deduplication then stores
--   the rows if the crash came before they were stored, and drops them if after.
-- ingest_requests: filled by the view below from the events INSERT itself, so a
--   request is listed once its rows are stored. Other writers (Vector) send no such
--   token: nothing is recorded for them.
-- Both keep 7 days: the window in which a retry is recognised.
CREATE TABLE IF NOT EXISTS `cvat`.ingest_groups
(
    group_token String,
    group_hash UInt64 MATERIALIZED cityHash64(group_token),
    body String CODEC(ZSTD(1)),
    written_at DateTime64(6, 'Etc/UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
ORDER BY written_at
TTL toDateTime(written_at) + INTERVAL 7 DAY;

CREATE TABLE IF NOT EXISTS `cvat`.ingest_requests
(
    request String,
    group_hash UInt64,
    inserted_at DateTime64(6, 'Etc/UTC')
)
ENGINE = MergeTree
ORDER BY request
TTL toDateTime(inserted_at) + INTERVAL 7 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS `cvat`.ingest_requests_mv TO `cvat`.ingest_requests AS
SELECT arrayJoin(arrayPopFront(splitByChar(' ', getSetting('insert_deduplication_token')))) AS request,
       cityHash64(getSetting('insert_deduplication_token')) AS group_hash,
       now64(6) AS inserted_at
FROM (SELECT 1 FROM `cvat`.events LIMIT 1)
WHERE startsWith(getSetting('insert_deduplication_token'), 'ingest ');
