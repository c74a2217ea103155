-- The database and the ledger of applied migrations.
CREATE DATABASE IF NOT EXISTS `cvat`;

CREATE TABLE IF NOT EXISTS `cvat`.schema_migrations
(
    name String,
    checksum String,
    applied_at DateTime64(3, 'Etc/UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (name, applied_at);
