-- Reviewing from anywhere: a durable notification outbox and reviewer API tokens.

-- One row per gate visit, event and channel: the unique key is what makes "exactly one
-- notification per gate visit and channel" hold however often a run is retried or resumed
-- (the row is inserted with ON CONFLICT DO NOTHING). `visit` is the checkpoint the thread
-- waits at, as in approvals.checkpoint_id. `facts` is what the message says (graph, gate,
-- summary, deadline, digest); the message itself is rendered at delivery.
CREATE TABLE notifications (
    id          bigserial PRIMARY KEY,
    thread_id   text NOT NULL,
    visit       text NOT NULL,
    gate        text NOT NULL,
    event       text NOT NULL CHECK (event IN ('waiting', 'reminder', 'expired')),
    channel     text NOT NULL CHECK (channel IN ('webhook', 'slack', 'email')),
    facts       jsonb NOT NULL DEFAULT '{}'::jsonb,
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed', 'cancelled')),
    attempts    integer NOT NULL DEFAULT 0,
    -- when the next delivery attempt is due (a claimed row is pushed forward by a lease)
    due_at      timestamptz NOT NULL DEFAULT now(),
    last_error  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    UNIQUE (thread_id, visit, event, channel)
);
CREATE INDEX notifications_due_idx ON notifications (due_at, id) WHERE status = 'pending';
CREATE INDEX notifications_thread_idx ON notifications (thread_id, id);

-- Reviewer API tokens: only a SHA-256 of the token is kept (the token is shown once), so a
-- copy of the database does not let anyone decide as a reviewer. A name has at most one
-- live token; revoking keeps the row for the audit.
CREATE TABLE reviewer_tokens (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    token_hash   text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE UNIQUE INDEX reviewer_tokens_live_name ON reviewer_tokens (name) WHERE revoked_at IS NULL;
