-- Fencing a worker whose claims were taken over, and pruning the worker's own tables.
--
-- A worker holds the run claims of all its threads on ONE session (its lock session,
-- checkpoint/workers.py) and writes through a pool of other sessions. Every pool session of a
-- worker carries application_name 'signoff-worker:<lock pid>:<lock session start, in
-- microseconds since the epoch>'. The trigger below refuses any write of such a session to
-- the tables a run writes (checkpoints, their writes and blobs, threads, progress events,
-- audit events) once that lock session is gone: a worker frozen past its lease, whose
-- session another worker ended (pg_terminate_backend) before taking its jobs, cannot save a
-- step, a status or an event when it wakes up. A write already under way when the claim goes
-- is ended with its session: the taking-over worker terminates every session carrying the
-- tag before it hands the jobs on (checkpoint/workers.py `reap`).
--
-- Sessions without the tag (every `signoff` command run in a terminal, the web server) skip
-- the trigger in its WHEN clause: they pay nothing. A terminal's run writes its checkpoints
-- through the very session that holds its claim, which fences it by construction.

CREATE OR REPLACE FUNCTION signoff_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tag text[] := string_to_array(current_setting('application_name'), ':');
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_stat_get_activity(tag[2]::integer) a
        WHERE (extract(epoch FROM a.backend_start) * 1000000)::bigint = tag[3]::bigint
    ) THEN
        RAISE EXCEPTION 'signoff: this worker''s claim session ended (another worker took its threads over); write refused'
            USING ERRCODE = 'lock_not_available';
    END IF;
    RETURN NULL;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['checkpoints', 'checkpoint_writes', 'checkpoint_blobs', 'threads', 'progress_events', 'audit_events'] LOOP
        EXECUTE format(
            'CREATE TRIGGER signoff_fence BEFORE INSERT OR UPDATE OR DELETE ON %I FOR EACH STATEMENT '
            'WHEN (left(current_setting(''application_name''), 15) = ''signoff-worker:'') EXECUTE FUNCTION signoff_fence()', t);
    END LOOP;
END
$$;

-- `signoff db prune` deletes the finished jobs of finished threads (bounded storage).
CREATE INDEX IF NOT EXISTS jobs_thread_idx ON jobs (thread_id);
