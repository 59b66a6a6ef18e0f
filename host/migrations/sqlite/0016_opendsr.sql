-- Requests received through the OpenDSR API: the controller's own id for the request
-- (subject_request_id, unique per controller), where its status callbacks go, and the
-- last status they were told, so that each change is told once.
CREATE TABLE opendsr_requests (
    request_id TEXT PRIMARY KEY REFERENCES requests(id),
    controller_id TEXT NOT NULL REFERENCES controllers(id),
    subject_request_id TEXT NOT NULL,
    api_version TEXT NOT NULL,
    regulation TEXT,
    submitted_time TEXT NOT NULL,
    callbacks TEXT NOT NULL,
    -- oubli's status they were last told (the OpenDSR status is made from it).
    last_status TEXT NOT NULL,
    -- SHA-256 of the body as received: a request sent again must be the same.
    body_sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (controller_id, subject_request_id)
);

-- A status callback goes to the URL the request gave, signed with the processor's key.
ALTER TABLE webhook_deliveries ADD COLUMN callback_url TEXT;

-- When the subject's request reached the controller, where that was before oubli received
-- it (an OpenDSR request's submitted_time): the one-month deadline runs from then.
ALTER TABLE requests ADD COLUMN deadline_from INTEGER;
