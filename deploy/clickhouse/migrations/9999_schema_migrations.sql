-- The last init script: it records every migration the init scripts before it applied,
-- with the checksum `cvat-analytics migrate` computes (cvat_analytics/migrate.py), so
-- the first migrate after a plain `docker compose up` applies nothing. Without it the
-- ledger stays empty and that migrate re-runs them all (0012 rewrites every part of
-- events; the working time is recomputed). Rendered by `cvat-analytics render`
-- (generator/render.py) into clickhouse/migrations/, which the image runs in name order.
INSERT INTO `cvat`.schema_migrations (name, checksum) VALUES
    ('0001_create_database', 'e920e5420b34d72c791245788a4101e1589329c6c944491d13e02492a05abf01'),
    ('0002_create_events', 'a1534d69e25e23a1cf9efdb41125f0ed6aa2141206cefb221312875b0dfd204f'),
    ('0003_events_retention_and_dedup', '90ba2d60ea91325079c8ba0647c8f335b9bb25b926e8f9130a69aa2c155f0a7f'),
    ('0004_working_time_tables', 'e030916d5e61784e0621dc5fdb43acd978c6f82cca24acbcd69302a73275d5c1'),
    ('0005_working_time_views', '0ff18bd2000b11d267ca1d8feef138468086804543105a94368dd428b8fcf89a'),
    ('0006_events_fsync', 'f892237fc01b5a6cdb5661ffc3d1235ddc6c0f9bbb862b7de20605ccfa2fe44a'),
    ('0007_adopt_cvat_events_table', '200e9505cba29b3e64aaccda28cf47eb6d6267cb7d06bc74e5ac03170c86f448'),
    ('0008_working_time_refresh_tables', '69b00d087c3e48e723c3697c8d692a4b5fecda863bdfc866a0eaf80ec530d646'),
    ('0009_working_time_refresh', 'd62f670172e500c69dd9915dae40282a8df0132096ee9fc672dd4a054c7e0f0a'),
    ('0010_imports', '6fc22dedd818d57210207cbe0d03cda298dfe49caca28be5c6cc3f9054e48dad'),
    ('0011_ingest_requests', 'c392d6c6da0462e0da81ed32c238c422aa7b4ca1e8f854ac51597e72e404af42'),
    ('0012_events_inserted_at', '46f73c2df61699f2d797e88c08a70de11c5c4f6790529a682233762d543bf2a5'),
    ('0013_working_time_refresh', 'd62f670172e500c69dd9915dae40282a8df0132096ee9fc672dd4a054c7e0f0a'),
    ('0014_ingest_requests_key_value', '6f7a6a9f68af08b2cf719631b82f8460f037eb5d584301a3cc6e2071c112a232'),
    ('0015_events_remote_addr', 'c9757c21b6601098c4a413acf0021ae8525dde109f62ce429ef08e6830338d55'),
    ('0016_vector_metrics', 'e2a139102f4b201b813c50631eb1ad88a0a06e07dfc59218e8dd55330b78420e'),
    ('0017_working_time_refresh_limits', '3bc566d61823371337f5f5a304b42fb49fd871abba4092f690e5782e45e3d219'),
    ('0018_working_time_refresh_slots', 'e8699d72cdc2e60ecd0b8ae76d74c38085db6bf7db933b53faa3a269bba87e9d'),
    ('0020_vector_metrics_retention', '19e54b8a51c3615320fcef2ca8dd41f72c661a8f4e573052bce8b3af4cc0bb74'),
    ('0026_productivity_state', '4f16683c0efae2d4b9f036a5a639500b4c0d46c256c71a8c73aa9d09a7fb9c41'),
    ('0027_productivity_recompute', '032fcb9bd0104cd128a3d1dad381c7ccc3ab44fe51e2706020d971b757987322'),
    ('0028_events_id_value_indexes', 'c89c045efd9247c62b32139e3fc3c9dbd318334d694e8bea4e09c43956641aac');
