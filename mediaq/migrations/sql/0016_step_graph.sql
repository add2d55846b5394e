-- mediaq schema, revision 0016: a workflow's steps form a graph.
-- A step may wait for named steps (needs), run only when a condition holds (when_expr,
-- a CEL expression), fan out over a list (for_each), and ask for its own resources.
-- Every new column has a default that keeps a plain ordered list of steps (seed 000's
-- own INSERTs included) a chain, as before. A step execution may be 'skipped' (its
-- condition was false) and belongs to one item of a fanned-out step (item_index).

SET LOCAL search_path = mediaq, public;

ALTER TABLE workflow_steps
    ADD COLUMN needs             JSONB,
    ADD COLUMN when_expr         TEXT,
    ADD COLUMN for_each          JSONB,
    ADD COLUMN resource_category TEXT
        CHECK (resource_category IN ('cpu', 'gpu_encode', 'gpu_ai')),
    ADD COLUMN vram_required     INTEGER CHECK (vram_required >= 0),
    ADD COLUMN fallback_category TEXT
        CHECK (fallback_category IN ('cpu', 'gpu_encode', 'gpu_ai')),
    ADD COLUMN fuse              TEXT NOT NULL DEFAULT 'auto' CHECK (fuse IN ('auto', 'never'));

ALTER TABLE step_executions DROP CONSTRAINT step_executions_status_check;
ALTER TABLE step_executions ADD CONSTRAINT step_executions_status_check
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled', 'skipped'));
ALTER TABLE step_executions ADD COLUMN item_index INTEGER;

-- Derived when the workflow is applied: the category its jobs may fall back to when no
-- live worker can serve theirs (every step needing a GPU names that fallback).
ALTER TABLE workflow_definitions ADD COLUMN fallback_category TEXT
    CHECK (fallback_category IN ('cpu', 'gpu_encode', 'gpu_ai'));

DROP INDEX step_executions_one_completion;
CREATE UNIQUE INDEX step_executions_one_completion
    ON step_executions (job_id, step_id, coalesce(item_index, -1))
    WHERE status IN ('completed', 'skipped');
