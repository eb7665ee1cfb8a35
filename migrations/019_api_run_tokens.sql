-- The reviewer token a LangGraph API run was created through: a run queued behind another
-- (multitask_strategy 'enqueue') decides with it when it starts, so the decision names the
-- token like any other, and a token revoked in between decides nothing.
ALTER TABLE api_runs ADD COLUMN token_id bigint;
