-- mediaq schema, revision 0015: indexes on the columns that point at a job.
-- Deleting a job (mediaq prune) makes PostgreSQL find the rows of watch_files,
-- job_dedupe_keys and schedules that reference it; without an index that is a scan of
-- the whole table per job (5,000 jobs against 200,000 watch_files rows took 79 s).

SET LOCAL search_path = mediaq, public;

CREATE INDEX watch_files_job ON watch_files (job_id);
CREATE INDEX schedules_last_job ON schedules (last_job_id);
CREATE INDEX job_dedupe_keys_job ON job_dedupe_keys (job_id);
