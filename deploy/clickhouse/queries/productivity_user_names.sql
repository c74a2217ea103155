-- Each user's last name in the range (docs/productivity.md): the latest user_name their
-- events carry. Every value is bound.
SELECT user_id, argMaxMerge(last_name) AS last_name
FROM `cvat`.productivity_user_names
WHERE day BETWEEN {from_day:Date} AND {to_day:Date} AND ({user_id:Nullable(UInt64)} IS NULL OR user_id = {user_id:Nullable(UInt64)})
GROUP BY user_id
