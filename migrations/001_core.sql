-- Core application tables. LangGraph's checkpoint tables are created by PostgresSaver.setup().

-- One row per thread Signoff started: what graph it runs and where it stands, so `pending`
-- and `recover` do not have to scan every checkpoint.
CREATE TABLE threads (
    thread_id   text PRIMARY KEY,
    graph       text NOT NULL,
    status      text NOT NULL CHECK (status IN ('running', 'waiting', 'finished', 'failed', 'interrupted')),
    gate        text,
    summary     text NOT NULL DEFAULT '',
    deadline    timestamptz,
    deadline_hours double precision NOT NULL DEFAULT 24,
    -- the graph input, so a thread killed before its first checkpoint can still be resumed
    input       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX threads_status_idx ON threads (status);

-- Every human decision at a gate. One decision per gate visit (the checkpoint it was made
-- at): a second approve/reject of the same visit violates the unique key and is refused.
CREATE TABLE approvals (
    id            bigserial PRIMARY KEY,
    thread_id     text NOT NULL REFERENCES threads (thread_id),
    gate          text NOT NULL,
    checkpoint_id text NOT NULL,
    decision      text NOT NULL CHECK (decision IN ('approved', 'rejected', 'expired')),
    actor         text NOT NULL,
    note          text NOT NULL DEFAULT '',
    digest        text NOT NULL DEFAULT '',
    decided_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (thread_id, checkpoint_id)
);

-- Support tickets: at most one per thread, so a re-run never opens a second.
CREATE TABLE tickets (
    id          bigserial PRIMARY KEY,
    thread_id   text NOT NULL UNIQUE,
    intent      text NOT NULL,
    summary     text NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Outbound replies: one per thread; "sending" is writing here (a mailer would drain it).
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    thread_id   text NOT NULL UNIQUE,
    recipient   text,
    kind        text NOT NULL CHECK (kind IN ('reply', 'holding')),
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Knowledge base for the support agents, searched with PostgreSQL full-text search.
CREATE TABLE kb_articles (
    slug        text PRIMARY KEY,
    title       text NOT NULL,
    category    text NOT NULL,
    body        text NOT NULL,
    content_sha text NOT NULL,
    tsv         tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('english', title), 'A') || to_tsvector('english', body)
                ) STORED,
    loaded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX kb_articles_tsv_idx ON kb_articles USING gin (tsv);

-- What happened to a thread and who did it: decisions, expiries, retries, fallbacks, side effects.
CREATE TABLE audit_events (
    id          bigserial PRIMARY KEY,
    thread_id   text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    kind        text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_thread_idx ON audit_events (thread_id, at);
