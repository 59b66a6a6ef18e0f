-- Retention runs: each time a retention rule ran, what it found and filed, and the
-- destruction report issued once every request it filed has settled (signed, kept as
-- issued, sent to the controller by webhook and e-mail).
CREATE TABLE retention_runs (
    id TEXT PRIMARY KEY,
    -- The rule may be removed later; its run stays.
    rule_id TEXT NOT NULL,
    controller_id TEXT NOT NULL REFERENCES controllers(id),
    system_id TEXT NOT NULL REFERENCES systems(id),
    rule TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    -- Moved on by the running run at each page and every hundred filings: a run whose
    -- beat stopped long ago was cut off by its process.
    beat_at BIGINT NOT NULL,
    finished_at BIGINT,
    expired BIGINT,
    filed BIGINT NOT NULL DEFAULT 0,
    more BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    -- running, waiting (for its requests to settle), issued, or none (it filed nothing).
    report_status TEXT NOT NULL,
    report TEXT,
    issued_at BIGINT
);
CREATE INDEX retention_runs_controller ON retention_runs(controller_id, id);
CREATE INDEX retention_runs_open ON retention_runs(report_status);

-- The run that filed a request.
ALTER TABLE requests ADD COLUMN retention_run_id TEXT REFERENCES retention_runs(id);
CREATE INDEX requests_retention_run ON requests(retention_run_id);

-- Webhooks and e-mails about a run's report concern no request.
ALTER TABLE webhook_deliveries ALTER COLUMN request_id DROP NOT NULL;
ALTER TABLE webhook_deliveries ADD COLUMN run_id TEXT REFERENCES retention_runs(id);
CREATE INDEX webhook_deliveries_run ON webhook_deliveries(run_id);
ALTER TABLE emails ALTER COLUMN request_id DROP NOT NULL;
ALTER TABLE emails ADD COLUMN run_id TEXT REFERENCES retention_runs(id);
CREATE INDEX emails_run ON emails(run_id);
