-- mediaq schema, revision 0022: circuit breakers on actions, and the storage health of
-- each worker (issue 25: operations that survive a bad day).

SET LOCAL search_path = mediaq, public;

-- Circuit breakers on actions (issue 25). One row per action on one host, and one per
-- action on every host (host ''). A breaker opens when its action failed transiently
-- breaker_threshold times within breaker_window_seconds (the action-wide one only when
-- the failures come from two hosts or more: one host's broken encoder stops that host,
-- not the fleet); new steps of the action then wait until reopen_at; after the
-- cool-down one step runs as the probe (half_open); a success closes it.
CREATE TABLE action_breakers (
    action            TEXT NOT NULL,
    host              TEXT NOT NULL DEFAULT '',
    state             TEXT NOT NULL DEFAULT 'closed'
        CHECK (state IN ('closed', 'open', 'half_open')),
    failures          INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    failing_hosts     TEXT[] NOT NULL DEFAULT '{}',
    window_started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    opened_at         TIMESTAMPTZ,
    reopen_at         TIMESTAMPTZ,
    probe_job_id      BIGINT,
    last_error        TEXT,
    times_opened      INTEGER NOT NULL DEFAULT 0,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (action, host),
    CHECK (state = 'closed' OR reopen_at IS NOT NULL)
);

COMMENT ON TABLE action_breakers IS
    'Circuit breakers on actions (host empty: every host); see mediaq/worker/breakers.py.';

-- Why a worker does not claim: its input or output roots are missing or unwritable, or
-- the output disk is below its floor (mediaq/worker/storage_health.py); NULL: healthy.
ALTER TABLE workers ADD COLUMN claim_problem TEXT;

-- The statements of this section that move jobs, named on their moves (the transition
-- list says which statement makes each move: tests/test_job_transitions.py).
UPDATE job_status_transitions
   SET description = description || '; jobs_mark_waiting_storage: no worker of this host may claim (its storage, or too little memory)'
 WHERE from_status = 'pending' AND to_status = 'queued';
UPDATE job_status_transitions
   SET description = description || '; job_hand_back_waiting: an open circuit breaker or unhealthy storage stops the next step (no retry spent, retry_after and waiting_reason set)'
 WHERE from_status = 'processing' AND to_status = 'pending';
UPDATE job_status_transitions
   SET description = replace(description, 'job_schedule_retry, job_hand_back, jobs_rescue_expired:', 'job_schedule_retry, job_hand_back, job_hand_back_waiting, jobs_rescue_expired:')
 WHERE from_status = 'processing' AND to_status IN ('paused', 'cancelled');
UPDATE job_statuses
   SET description = 'claimable, but a worker found too little free VRAM on its machine, or could not claim (its storage, its memory): waiting_reason says why'
 WHERE status = 'queued';
