-- People, not only programs. An approval link lets a person at the controller decide on
-- one forwarded request; its token is derived from the id and a key (never stored), and
-- it works once, until it expires. A console session is a browser's sign-in, stored as
-- the SHA-256 of its cookie. An e-mail is queued in the transaction of what it tells and
-- written when sent (its text is made then, from the request); at most one per request,
-- event and recipient (`controller` or `dpo`, whose address is looked up when sent).
ALTER TABLE controllers ADD COLUMN contact_email TEXT;
ALTER TABLE tokens ADD COLUMN email TEXT;

CREATE TABLE approval_links (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES requests(id),
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX approval_links_request ON approval_links(request_id);

CREATE TABLE console_sessions (
    hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL REFERENCES tokens(id),
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE emails (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES requests(id),
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
    UNIQUE (request_id, event, recipient)
);
CREATE INDEX emails_due ON emails(status, next_attempt_at);

-- Every attempt at sending an e-mail, as for webhooks.
CREATE TABLE email_attempts (
    email_id TEXT NOT NULL REFERENCES emails(id),
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    error TEXT,
    PRIMARY KEY (email_id, attempt)
);
