-- mediaq schema, revision 0027: an operator may pause a whole host's claims.
-- While paused_by is set, the host's workers claim nothing new (their running jobs go
-- on); each worker's admission watch reads it (mediaq/worker/storage_health.py).

SET LOCAL search_path = mediaq, public;

ALTER TABLE worker_hosts
    ADD COLUMN paused_by TEXT,
    ADD COLUMN paused_at TIMESTAMPTZ;
