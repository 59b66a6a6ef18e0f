-- A request may wait: its tasks run no earlier than `not_before` (ms).
ALTER TABLE requests ADD COLUMN not_before BIGINT;
-- The keyed hashes an erasure or objection adds to its controller's suppression list,
-- made at submission from the identities as normalised (JSON: [{kind, hash}]).
ALTER TABLE requests ADD COLUMN suppression_hashes TEXT;

-- A controller's suppression list, opt-in: its stated purpose and the region a phone
-- number written without its country code is read in. No row: no list.
CREATE TABLE suppression_lists (
    controller_id TEXT PRIMARY KEY REFERENCES controllers(id),
    purpose TEXT NOT NULL,
    phone_region TEXT,
    -- A MAC of a constant under the identity hash key the entries are keyed with: a
    -- check under another key is refused rather than answered "not suppressed".
    key_fingerprint TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Its entries: the keyed hash of an identity, never the identity.
CREATE TABLE suppression_entries (
    controller_id TEXT NOT NULL REFERENCES controllers(id),
    hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    request_id TEXT REFERENCES requests(id),
    added_at BIGINT NOT NULL,
    PRIMARY KEY (controller_id, hash)
);
