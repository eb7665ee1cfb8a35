-- Who may do what: the requester of each thread, who minted and revoked each reviewer token,
-- and every approval policy ever loaded (checkpoint/identity.py, checkpoint/policy.py).

-- Whoever started the thread (the CLI's token owner or OS login): never an approver of its
-- own request. Threads started before this migration take it from their audit trail.
ALTER TABLE threads ADD COLUMN requested_by text;
UPDATE threads t SET requested_by = s.actor
  FROM (SELECT DISTINCT ON (thread_id) thread_id, actor FROM audit_events
        WHERE kind = 'thread_started' ORDER BY thread_id, id) s
 WHERE s.thread_id = t.thread_id;

-- Who minted and who revoked each token (an administrator; NULL for tokens from before), and
-- when the minter acted through a token of their own, who had minted that one: an act through
-- a token the requester minted counts as the requester's own.
ALTER TABLE reviewer_tokens ADD COLUMN created_by text, ADD COLUMN created_through text, ADD COLUMN revoked_by text;

-- The token a stage approval came through (NULL: the CLI as an OS login), so an approval
-- through a token the requester minted after the request is never counted for it.
ALTER TABLE stage_approvals ADD COLUMN token_id bigint REFERENCES reviewer_tokens (id);

-- Every policy loaded, one row per load, never changed: the one in force is the newest.
CREATE TABLE policy_versions (
    version   bigserial PRIMARY KEY,
    source    text NOT NULL,
    document  jsonb NOT NULL,
    loaded_by text NOT NULL,
    -- who had minted the token it was loaded through (NULL: loaded as an OS login)
    loaded_through text,
    loaded_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO policy_versions (source, document, loaded_by, loaded_at)
  SELECT source, document, loaded_by, loaded_at FROM approval_policy;
DROP TABLE approval_policy;

CREATE FUNCTION policy_versions_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'a loaded policy is kept as it was: load a new version instead';
END $$;
CREATE TRIGGER policy_versions_keep BEFORE UPDATE OR DELETE ON policy_versions
  FOR EACH ROW EXECUTE FUNCTION policy_versions_keep();
