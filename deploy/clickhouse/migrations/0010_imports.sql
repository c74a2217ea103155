-- Files loaded by `cvat-analytics import`, by the content of their valid events (the
-- rows as stored, whatever the file's format or the batch size): the same content
-- imported again is recognised and stores nothing.
CREATE TABLE IF NOT EXISTS `cvat`.imports
(
    content_sha256 FixedString(64),
    events UInt64,
    source String,
    imported_at DateTime64(3, 'Etc/UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY content_sha256;
