-- The web inbox lists every thread, not only those waiting: by status, newest first, paged by
-- (updated_at, thread_id) keys, and searched by a word of what `pending` summarises (the
-- customer's message, a brief, a topic), so any page of 10,000 threads is one index range.
CREATE INDEX IF NOT EXISTS threads_status_updated_idx ON threads (status, updated_at, thread_id);
CREATE INDEX IF NOT EXISTS threads_updated_idx ON threads (updated_at, thread_id);
-- The summary's words, stemmed ("charged" finds "charge"), kept with the row: a search then
-- reads the index and the stored words, never re-parsing each matching summary.
ALTER TABLE threads ADD COLUMN IF NOT EXISTS summary_words tsvector
    GENERATED ALWAYS AS (to_tsvector('english', summary)) STORED;
CREATE INDEX IF NOT EXISTS threads_summary_words_idx ON threads USING gin (summary_words);
-- Threads whose gate deadline ran out (the "expired" list and `signoff stats`).
CREATE INDEX IF NOT EXISTS approvals_expired_idx ON approvals (thread_id) WHERE decision = 'expired';
