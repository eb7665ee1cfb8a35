-- Approval chains: what a waiting thread's approval chain is computed from, stored with the wait, so
-- `pending` and `show` work out the stage with the policy in force now (as a decision does),
-- instead of showing words written under the policy in force when the thread began to wait.
-- Rows written before this migration keep only their words (waiting_for), shown as they are.
ALTER TABLE approval_waits
    ADD COLUMN graph         text,
    ADD COLUMN gate          text,
    ADD COLUMN checkpoint_id text,
    ADD COLUMN digest        text,
    ADD COLUMN amount_cents  bigint,
    ADD COLUMN currency      text;
