-- Published documents and the research corpus.

-- What the revision and research graphs publish: one row per thread, so an approval that is
-- run again (or a publish step re-run after a crash) finds this row instead of adding one.
CREATE TABLE documents (
    id           bigserial PRIMARY KEY,
    thread_id    text NOT NULL UNIQUE,
    graph        text NOT NULL,
    title        text NOT NULL,
    body         text NOT NULL,
    content_sha  text NOT NULL,
    path         text NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);

-- Research corpus: one row per ingested file. The content hash is unique, so adding the same
-- text again (under any name) is a no-op; a changed file under the same source name replaces
-- its chunks.
CREATE TABLE corpus_documents (
    id           bigserial PRIMARY KEY,
    source       text NOT NULL UNIQUE,
    title        text NOT NULL,
    content_sha  text NOT NULL UNIQUE,
    chunk_count  integer NOT NULL,
    loaded_at    timestamptz NOT NULL DEFAULT now()
);

-- The searchable pieces of each document (a section, or part of a long one).
CREATE TABLE corpus_chunks (
    id           bigserial PRIMARY KEY,
    document_id  bigint NOT NULL REFERENCES corpus_documents (id) ON DELETE CASCADE,
    ordinal      integer NOT NULL,
    heading      text NOT NULL DEFAULT '',
    body         text NOT NULL,
    tsv          tsvector GENERATED ALWAYS AS (
                     setweight(to_tsvector('english', heading), 'A') || to_tsvector('english', body)
                 ) STORED,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX corpus_chunks_tsv_idx ON corpus_chunks USING gin (tsv);
