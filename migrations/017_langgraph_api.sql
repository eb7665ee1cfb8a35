-- LangGraph's HTTP API (`signoff serve`, under /langgraph): what its clients keep beyond a
-- Signoff thread. A thread may exist before its first run (no graph yet), with metadata.
CREATE TABLE api_threads (
    thread_id   text PRIMARY KEY,
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_threads_metadata_idx ON api_threads USING gin (metadata jsonb_path_ops);

-- One row per run a client created: the Signoff job that carries it, and how it ended.
-- A run created on a busy thread with multitask_strategy 'enqueue' waits here without a job.
CREATE TABLE api_runs (
    run_id              uuid PRIMARY KEY,
    thread_id           text NOT NULL,
    assistant_id        text NOT NULL,
    graph               text NOT NULL,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'success', 'error', 'timeout', 'interrupted')),
    actor               text NOT NULL,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- what the run was asked (input, command, config, context, stream modes, interrupt points)
    kwargs              jsonb NOT NULL DEFAULT '{}'::jsonb,
    multitask_strategy  text NOT NULL DEFAULT 'reject',
    job_id              bigint,
    -- the checkpoint the thread stood at when the run began (streams start after it)
    from_checkpoint     text,
    -- the thread's last progress event when the run began (its `custom` stream starts after it)
    from_event          bigint NOT NULL DEFAULT 0,
    webhook             text,
    -- the webhook's own outbox: pending until posted (retried with backoff), then sent or failed
    webhook_status      text CHECK (webhook_status IN ('pending', 'sent', 'failed')),
    webhook_attempts    integer NOT NULL DEFAULT 0,
    webhook_due         timestamptz,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_runs_thread_idx ON api_runs (thread_id, created_at);
CREATE INDEX api_runs_open_idx ON api_runs (created_at) WHERE status IN ('pending', 'running');
CREATE INDEX api_runs_webhook_idx ON api_runs (webhook_due) WHERE webhook_status = 'pending';
