-- Workers, their job queue, and persisted progress events.
--
-- A job is "make this thread progress as far as it can now": a thread submitted with
-- --detach, a recorded decision, a deadline come due, a run found dead. The worker decides
-- what to do from the thread's checkpoint, so the kind is a label for people, not a branch.

-- A thread handed to a worker waits as 'queued' (no process has run it yet), so `recover`
-- and `pending` leave it alone.
ALTER TABLE threads DROP CONSTRAINT IF EXISTS threads_status_check;
ALTER TABLE threads ADD CONSTRAINT threads_status_check
    CHECK (status IN ('queued', 'running', 'waiting', 'finished', 'failed', 'interrupted'));

-- Live workers. The heartbeat is written with the database's clock and compared with it
-- (one clock for liveness); lock_pid is the backend of the session that holds the worker's
-- run claims (advisory locks), so a worker whose process died is recognised at once by that
-- session being gone, and one whose machine vanished by its stale heartbeat.
CREATE TABLE workers (
    id            bigserial PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    lock_pid      integer NOT NULL,
    -- with lock_pid, names the session exactly (a backend pid may be reused later)
    lock_started  timestamptz NOT NULL,
    concurrency   integer NOT NULL,
    running       integer NOT NULL DEFAULT 0,
    done          bigint NOT NULL DEFAULT 0,
    draining      boolean NOT NULL DEFAULT false,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id           bigserial PRIMARY KEY,
    thread_id    text NOT NULL REFERENCES threads (thread_id),
    kind         text NOT NULL CHECK (kind IN ('start', 'decision', 'deadline', 'recover')),
    status       text NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'doing', 'done', 'failed')),
    run_after    timestamptz NOT NULL DEFAULT now(),
    worker_id    bigint REFERENCES workers (id) ON DELETE SET NULL,
    -- how often a worker died while running it; past a bound the job is dead-lettered
    recoveries   integer NOT NULL DEFAULT 0,
    result       text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);
-- Exclusivity, twice (after procrastinate): the claim query skips threads with a job in
-- 'doing', and this index refuses a second one should two claims ever race past that.
CREATE UNIQUE INDEX jobs_one_doing_per_thread ON jobs (thread_id) WHERE status = 'doing';
-- At most one job waits per thread: enqueueing is idempotent (ON CONFLICT DO NOTHING), and
-- whatever the waiting job finds in the checkpoint it does.
CREATE UNIQUE INDEX jobs_one_todo_per_thread ON jobs (thread_id) WHERE status = 'todo';
CREATE INDEX jobs_todo_idx ON jobs (run_after, id) WHERE status = 'todo';
CREATE INDEX jobs_worker_idx ON jobs (worker_id) WHERE status = 'doing';

-- What a person watching a thread sees (node start/end, model, retries, fallbacks, tokens,
-- the stop), kept so `signoff watch` replays what happened before it attached.
CREATE TABLE progress_events (
    id         bigserial PRIMARY KEY,
    thread_id  text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    event      jsonb NOT NULL
);
CREATE INDEX progress_events_thread_idx ON progress_events (thread_id, id);
