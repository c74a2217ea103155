-- The sort key and engine clause (with its TTL) of <database>.events; no row while the
-- table does not exist. CVAT's own table (its init.sh / init.py) is sorted by timestamp
-- alone, the one migration 0002 creates by (user_id, timestamp): `migrate` tells an
-- adopted CVAT table by it, and compares a new TTL with the one in force.
SELECT sorting_key, engine_full FROM system.tables WHERE database = {database:String} AND name = 'events';
