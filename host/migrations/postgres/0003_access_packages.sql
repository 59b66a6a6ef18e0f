-- When an access request's package (its exported records) was purged after expiry.
ALTER TABLE requests ADD COLUMN package_purged_at BIGINT;
