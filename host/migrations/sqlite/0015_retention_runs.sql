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
    started_at INTEGER NOT NULL,
    -- Moved on by the running run at each page and every hundred filings: a run whose
    -- beat stopped long ago was cut off by its process.
    beat_at INTEGER NOT NULL,
    finished_at INTEGER,
    expired INTEGER,
    filed INTEGER NOT NULL DEFAULT 0,
    more INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    -- running, waiting (for its requests to settle), issued, or none (it filed nothing).
    report_status TEXT NOT NULL,
    report TEXT,
    issued_at INTEGER
);
CREATE INDEX retention_runs_controller ON retention_runs(controller_id, id);
CREATE INDEX retention_runs_open ON retention_runs(report_status);

-- The run that filed a request.
ALTER TABLE requests ADD COLUMN retention_run_id TEXT REFERENCES retention_runs(id);
CREATE INDEX requests_retention_run ON requests(retention_run_id);

-- Webhooks and e-mails about a run's report concern no request: `request_id` may be
-- empty and `run_id` names the run. SQLite cannot drop a NOT NULL, so both tables are
-- made again; their attempts' references are checked at commit.
PRAGMA defer_foreign_keys = ON;

CREATE TEMP TABLE webhook_deliveries_before AS SELECT * FROM webhook_deliveries;
DROP TABLE webhook_deliveries;
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    controller_id TEXT NOT NULL REFERENCES controllers(id),
    request_id TEXT REFERENCES requests(id),
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER,
    recipient_id TEXT REFERENCES recipients(id),
    run_id TEXT REFERENCES retention_runs(id)
);
INSERT INTO webhook_deliveries (id, controller_id, request_id, event, payload, status, attempts, next_attempt_at,
                                last_status, last_error, created_at, delivered_at, recipient_id)
    SELECT id, controller_id, request_id, event, payload, status, attempts, next_attempt_at,
           last_status, last_error, created_at, delivered_at, recipient_id FROM webhook_deliveries_before;
DROP TABLE webhook_deliveries_before;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_request ON webhook_deliveries(request_id);
CREATE INDEX webhook_deliveries_run ON webhook_deliveries(run_id);

CREATE TEMP TABLE emails_before AS SELECT * FROM emails;
DROP TABLE emails;
CREATE TABLE emails (
    id TEXT PRIMARY KEY,
    request_id TEXT REFERENCES requests(id),
    event TEXT NOT NULL,
    recipient TEXT NOT NULL,
    address TEXT,
    link_id TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error TEXT,
    delivered_at INTEGER,
    created_at INTEGER NOT NULL,
    run_id TEXT REFERENCES retention_runs(id),
    UNIQUE (request_id, event, recipient)
);
INSERT INTO emails (id, request_id, event, recipient, address, link_id, status, attempts, next_attempt_at,
                    last_error, delivered_at, created_at)
    SELECT id, request_id, event, recipient, address, link_id, status, attempts, next_attempt_at,
           last_error, delivered_at, created_at FROM emails_before;
DROP TABLE emails_before;
CREATE INDEX emails_due ON emails(status, next_attempt_at);
CREATE INDEX emails_run ON emails(run_id);
