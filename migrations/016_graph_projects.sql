-- Threads of any LangGraph graph (a project's langgraph.json), not only Signoff's own.

-- The fingerprint of the graph a thread started on (nodes, edges, channels), so a deploy that
-- removes what a waiting thread needs is caught (`signoff graphs check`) and refused.
ALTER TABLE threads ADD COLUMN graph_version text;
-- What every run of the thread is given again: its Runtime.context and the interrupt points
-- it was started with (a run resumed after a crash stops where the first would have).
ALTER TABLE threads ADD COLUMN run_options jsonb NOT NULL DEFAULT '{}'::jsonb;
-- Why the thread cannot run now (its graph is unknown here or fails to import): shown by
-- pending/show/workers; no worker requeues it until a process can load the graph again.
ALTER TABLE threads ADD COLUMN graph_error text;
CREATE INDEX threads_graph_error_idx ON threads (graph) WHERE graph_error IS NOT NULL;

-- The value the graph was resumed with (LangGraph's Command(resume=...)), so a thread whose
-- deciding process died resumes with exactly what the reviewer decided.
ALTER TABLE approvals ADD COLUMN answer jsonb;
-- `signoff answer`: a reply to an interrupt that is neither an approval nor a rejection.
ALTER TABLE approvals DROP CONSTRAINT IF EXISTS approvals_decision_check;
ALTER TABLE approvals ADD CONSTRAINT approvals_decision_check CHECK (decision IN ('approved', 'rejected', 'expired', 'answered'));
