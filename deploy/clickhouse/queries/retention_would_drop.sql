-- What a retention of {days} days would drop from `cvat`.events (`migrate` asks before it
-- sets a TTL): the events older than the cutoff, and the bytes on disk of the parts that
-- hold only such events, which go at once (ttl_only_drop_parts); a part that also holds
-- newer events goes when those expire too.
SELECT
    (SELECT count() FROM `cvat`.events
     WHERE timestamp < now64(3) - toIntervalDay({days:UInt32})) AS events,
    (SELECT toUInt64(ifNull(sum(bytes_on_disk), 0)) FROM system.parts
     WHERE database = {database:String} AND table = 'events' AND active
       AND name IN (SELECT _part FROM `cvat`.events GROUP BY _part
                    HAVING max(timestamp) < now64(3) - toIntervalDay({days:UInt32}))) AS bytes;
