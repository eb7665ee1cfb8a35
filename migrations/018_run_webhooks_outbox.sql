-- A LangGraph API run's webhook is a row of the notification outbox (channel 'run_webhook',
-- event 'ended', keyed by the run's id as its visit), queued in the transaction that records
-- the run's end and delivered, retried and audited like every other notification. The
-- columns api_runs kept for its own outbox stay (unused); webhooks still pending there are
-- moved to the outbox, with the run as stored (its final values were never stored).
ALTER TABLE notifications DROP CONSTRAINT IF EXISTS notifications_channel_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_channel_check
    CHECK (channel IN ('webhook', 'slack', 'email', 'any', 'run_webhook'));
ALTER TABLE notifications DROP CONSTRAINT IF EXISTS notifications_event_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_event_check
    CHECK (event IN ('waiting', 'reminder', 'expired', 'ended'));

INSERT INTO notifications (thread_id, visit, gate, event, channel, facts, due_at)
SELECT thread_id, run_id::text, '', 'ended', 'run_webhook',
       jsonb_build_object('url', webhook, 'body', jsonb_build_object(
           'run_id', run_id::text, 'thread_id', thread_id, 'assistant_id', assistant_id, 'created_at', created_at,
           'updated_at', updated_at, 'status', status, 'metadata', metadata, 'kwargs', kwargs,
           'multitask_strategy', multitask_strategy, 'values', NULL, 'error', error)),
       now()
FROM api_runs WHERE webhook_status = 'pending'
ON CONFLICT (thread_id, visit, event, channel) DO NOTHING;
UPDATE api_runs SET webhook_status = NULL WHERE webhook_status = 'pending';
DROP INDEX IF EXISTS api_runs_webhook_idx;
