-- The W3C trace context (traceparent) of the thread's trace, so every process that runs or
-- decides the thread (the CLI, a worker, `signoff serve`) adds its spans to that one trace.
ALTER TABLE threads ADD COLUMN trace_context text;
