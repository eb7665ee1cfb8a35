-- Approval chains and the policy behind them.

-- The policy in force (checkpoint/policy.py): one row, replaced by `signoff policy load`, so
-- every process applies the same one. No row: the documented defaults.
CREATE TABLE approval_policy (
    id        integer PRIMARY KEY CHECK (id = 1),
    source    text NOT NULL,
    document  jsonb NOT NULL,
    loaded_by text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now()
);

-- One row per stage approval of a chain, bound to the gate visit (checkpoint) and the digest
-- of the content approved; one person counts once per visit and content. The gate's own
-- decision is still the one row in `approvals`, recorded when the chain completes.
CREATE TABLE stage_approvals (
    id            bigserial PRIMARY KEY,
    thread_id     text NOT NULL,
    gate          text NOT NULL,
    checkpoint_id text NOT NULL,
    digest        text NOT NULL,
    stage         integer NOT NULL CHECK (stage >= 1),
    role          text,
    actor         text NOT NULL,
    note          text NOT NULL DEFAULT '',
    decided_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (thread_id, checkpoint_id, digest, actor)
);
CREATE INDEX stage_approvals_visit_idx ON stage_approvals (thread_id, checkpoint_id, digest);

-- Which stage a waiting thread waits for, in words, for `pending` (which reads no checkpoint).
CREATE TABLE approval_waits (
    thread_id   text PRIMARY KEY,
    waiting_for text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
