-- mediaq schema, revision 0006: content de-duplication.
-- Applied by mediaq/migrations/versions/0006_dedupe.py into schema "mediaq".
SET LOCAL search_path = mediaq, public;

-- A workflow that de-duplicates returns the job of an identical submission (same
-- input content, same workflow version, same parameters) made within the window.
ALTER TABLE workflow_definitions
    ADD COLUMN dedupe_window_seconds INTEGER CHECK (dedupe_window_seconds > 0);

-- The BLAKE3 hash of the input, for jobs of de-duplicating workflows.
ALTER TABLE workflow_jobs ADD COLUMN content_hash TEXT;

-- One row per de-duplication key: the job that holds it, and since when. The
-- primary key is what makes concurrent identical submissions race-free: the second
-- one waits for the first to commit, then finds the key taken.
CREATE TABLE job_dedupe_keys (
    dedupe_key TEXT PRIMARY KEY,
    job_id     BIGINT REFERENCES workflow_jobs (id) ON DELETE CASCADE,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
