-- mediaq schema, revision 0012: the job state machine, defined once, in the database.
-- Until now workflow_jobs.status had a CHECK list and every statement that moves a job
-- named the states it accepts, but nothing refused a move none of them makes (an
-- UPDATE typed into psql taking a completed job back to processing). The states and
-- the moves are now rows, and a trigger refuses every other move.
-- Rows already in the table are not checked (a state is not a move): any job may stay
-- where it is, and leaves it by a listed move.

SET LOCAL search_path = mediaq, public;

-- ===========================================================================
-- The job state machine: the states, the moves between them, and the trigger that
-- refuses any other move, whoever makes it (a worker, the CLI, psql)
-- ===========================================================================
-- The states a job can be in (the CHECK on workflow_jobs.status lists the same ones;
-- tests/test_job_transitions.py keeps the two, and mediaq.states.JobStatus, equal).
-- terminal: no worker will touch the job again; an operator may still retry a failed
-- or cancelled one.
CREATE TABLE job_statuses (
    status      TEXT PRIMARY KEY,
    terminal    BOOLEAN NOT NULL,
    description TEXT NOT NULL
);
COMMENT ON TABLE job_statuses IS
    'The states of workflow_jobs.status; terminal: no worker touches the job again.';

-- Every move between two different states that the engine makes (a status written
-- unchanged is no move, and INSERTs are not moves: a submission writes the column
-- default, pending). The statements named are those of mediaq/sql/queries.sql.
CREATE TABLE job_status_transitions (
    from_status TEXT NOT NULL REFERENCES job_statuses (status),
    to_status   TEXT NOT NULL REFERENCES job_statuses (status),
    description TEXT NOT NULL,
    PRIMARY KEY (from_status, to_status),
    CHECK (from_status <> to_status)
);
COMMENT ON TABLE job_status_transitions IS
    'The moves of workflow_jobs.status that the engine makes; the trigger workflow_jobs_status_transition refuses any other.';

-- Reference data, readable by anyone who can see the schema: the trigger reads it with
-- the rights of whoever updates a job.
GRANT SELECT ON job_statuses, job_status_transitions TO PUBLIC;

INSERT INTO job_statuses (status, terminal, description) VALUES
    ('pending', FALSE, 'claimable: new, resumed, retried, handed back or rescued (a retry_after in the future holds it until then)'),
    ('queued', FALSE, 'claimable, but a worker found too little free VRAM on its machine (waiting_reason says why)'),
    ('processing', FALSE, 'owned by one worker (worker_id, attempt) until lease_expires_at'),
    ('paused', FALSE, 'held by an operator until resumed'),
    ('completed', TRUE, 'done'),
    ('failed', TRUE, 'a dead letter (error_class says why) until an operator retries it'),
    ('cancelled', TRUE, 'stopped by an operator, until an operator retries it');

INSERT INTO job_status_transitions (from_status, to_status, description) VALUES
    ('pending', 'queued', 'jobs_mark_waiting: a worker found too little free VRAM on its machine'),
    ('pending', 'processing', 'job_claim_next: a worker claims the job (attempt + 1, a new lease)'),
    ('queued', 'processing', 'job_claim_next: a worker claims the job (attempt + 1, a new lease)'),
    ('pending', 'paused', 'job_pause: an operator holds a waiting job'),
    ('queued', 'paused', 'job_pause: an operator holds a waiting job'),
    ('paused', 'pending', 'job_resume: an operator releases a held job'),
    ('pending', 'cancelled', 'job_cancel: an operator cancels a waiting job'),
    ('queued', 'cancelled', 'job_cancel: an operator cancels a waiting job'),
    ('paused', 'cancelled', 'job_cancel: an operator cancels a held job'),
    ('processing', 'completed', 'job_complete: the owner finished the last step'),
    ('processing', 'failed', 'job_fail: the owner gives up (permanent error, retries used up, job timeout); jobs_rescue_expired: the lease ran out once too often'),
    ('processing', 'pending', 'job_schedule_retry: a transient failure, retried after a back-off (retry_after); job_hand_back: the owner drains; jobs_rescue_expired: the lease ran out (the worker was lost)'),
    ('processing', 'paused', 'job_schedule_retry, job_hand_back, jobs_rescue_expired: the attempt ended while a pause was requested (after_attempt)'),
    ('processing', 'cancelled', 'job_cancelled: the owner stopped on a cancel request; job_schedule_retry, job_hand_back, jobs_rescue_expired: the attempt ended while a cancel was requested (after_attempt)'),
    ('failed', 'pending', 'job_retry: an operator retries a dead letter'),
    ('cancelled', 'pending', 'job_retry: an operator retries a cancelled job');

-- BEFORE: an illegal move is refused before any row is written or any AFTER trigger
-- (queue row, slot release, outbox) runs. OF status with the WHEN: the writes that
-- leave the status alone (progress, leases, log lines) never call the function.
CREATE FUNCTION job_status_transition_check() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM job_status_transitions t
                    WHERE t.from_status = OLD.status AND t.to_status = NEW.status) THEN
        RAISE EXCEPTION 'illegal job status transition: % -> %', OLD.status, NEW.status
            USING ERRCODE = 'check_violation',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'status',
                  CONSTRAINT = 'workflow_jobs_status_transition',
                  DETAIL = format('job %s (id %s) is %s', OLD.job_code, OLD.id, OLD.status),
                  HINT = 'The moves a job can make are the rows of mediaq.job_status_transitions.';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER workflow_jobs_status_transition BEFORE UPDATE OF status ON workflow_jobs
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION job_status_transition_check();
