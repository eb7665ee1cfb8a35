-- Browser sessions of the web inbox, kept on the server so that signing out ends a session
-- everywhere (a copied cookie stops working) and every session has a fixed end. The cookie
-- carries a random id; only its SHA-256 is stored. Signing out deletes the row; expired rows
-- are deleted as new sessions open.
CREATE TABLE web_sessions (
    id_hash     text PRIMARY KEY,
    token_id    bigint NOT NULL REFERENCES reviewer_tokens (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX web_sessions_expires_idx ON web_sessions (expires_at);

-- Requests refused before anyone signed in are audited as one row per source address and
-- minute, counted (checkpoint/audit.py record_anonymous_refusal): a flood of them adds one row
-- a minute, not one per request, and the count is what the web server rate-limits on.
CREATE UNIQUE INDEX audit_events_anonymous_window ON audit_events ((detail->>'source'), (detail->>'window'))
    WHERE actor = 'anonymous' AND kind = 'http_refused';
