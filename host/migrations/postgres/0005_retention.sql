-- When a closed request's identities and new values were replaced by keyed hashes.
ALTER TABLE requests ADD COLUMN subject_redacted_at BIGINT;
-- Closed requests still holding the subject's data, for the retention job.
CREATE INDEX requests_unredacted ON requests(updated_at) WHERE subject_redacted_at IS NULL;
-- Events by action and time: the access log's retention and the audit API's filter.
CREATE INDEX audit_events_action ON audit_events(action, at);
