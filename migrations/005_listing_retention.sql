-- What `pending` and `show` need, stored when a thread reaches its gate, so a
-- listing is one indexed query on this table instead of loading every thread's checkpoint.

-- The content under review and its digest (what `approve --expect` checks), written by the
-- run that stopped at the gate; NULL when the thread is not waiting (or waited before this
-- migration: then the listing reads the digest from the checkpoint, as before).
ALTER TABLE threads ADD COLUMN IF NOT EXISTS digest text;
ALTER TABLE threads ADD COLUMN IF NOT EXISTS review text;

-- `pending`: waiting threads, oldest first (updated_at is when the thread began to wait),
-- paged with LIMIT, optionally for one graph or older than a duration.
CREATE INDEX IF NOT EXISTS threads_waiting_idx ON threads (updated_at, thread_id) WHERE status = 'waiting';
-- `db prune`: finished threads, oldest first.
CREATE INDEX IF NOT EXISTS threads_finished_idx ON threads (updated_at, thread_id) WHERE status = 'finished';
