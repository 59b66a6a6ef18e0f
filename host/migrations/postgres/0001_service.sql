-- oubli's service schema on PostgreSQL. Times are milliseconds since the Unix epoch (UTC),
-- so that deadlines and leases compare as integers.

CREATE TABLE controllers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    webhook_url TEXT,
    webhook_secret TEXT NOT NULL,
    auto_approve BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE plugins (
    digest TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    contract TEXT NOT NULL,
    info TEXT NOT NULL,
    size BIGINT NOT NULL,
    bytes BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE systems (
    id TEXT PRIMARY KEY,
    controller_id TEXT NOT NULL REFERENCES controllers(id),
    name TEXT NOT NULL,
    plugin_digest TEXT NOT NULL REFERENCES plugins(digest),
    config TEXT NOT NULL,
    article15 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (controller_id, name)
);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    controller_id TEXT REFERENCES controllers(id),
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    controller_id TEXT NOT NULL REFERENCES controllers(id),
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    identities TEXT NOT NULL,
    changes TEXT NOT NULL,
    external_ref TEXT,
    submitted_by TEXT NOT NULL,
    idempotency_key TEXT,
    received_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    extended_months BIGINT NOT NULL DEFAULT 0,
    extension_reason TEXT,
    decision_reason TEXT,
    updated_at BIGINT NOT NULL,
    completed_at BIGINT,
    UNIQUE (submitted_by, idempotency_key)
);
CREATE INDEX requests_controller ON requests(controller_id, received_at);
CREATE INDEX requests_status ON requests(status, due_at);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES requests(id),
    system_id TEXT NOT NULL REFERENCES systems(id),
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    run_after BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    last_error TEXT,
    last_error_kind TEXT,
    result TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (request_id, system_id)
);
CREATE INDEX tasks_ready ON tasks(status, run_after);
CREATE INDEX tasks_lease ON tasks(status, lease_expires_at);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    controller_id TEXT NOT NULL REFERENCES controllers(id),
    request_id TEXT NOT NULL REFERENCES requests(id),
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_request ON webhook_deliveries(request_id);

CREATE TABLE audit_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    request_id TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_request ON audit_events(request_id, seq);
