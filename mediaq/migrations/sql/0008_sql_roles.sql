-- mediaq schema, revision 0008: what direct SQL users (`mediaq db roles`) rely on.
-- Applied by mediaq/migrations/versions/0008_sql_roles.py into schema "mediaq".
SET LOCAL search_path = mediaq, public;

-- submit_job runs with its owner's rights (SECURITY DEFINER) so that a submitter
-- needs no privilege on the tables. Unchanged for every caller who may insert jobs
-- itself (the engine, the schema owner, superusers). For a caller who may not (a
-- mediaq_submitter), submitted_by is the caller's login name, another name is
-- refused, and an idempotency key only finds the caller's own job. pg_temp comes last
-- in its search_path: a caller's temporary table must not stand in for ours.
CREATE OR REPLACE FUNCTION mediaq.submit_job(
    workflow_code   text,
    input_file_path text,
    priority        integer DEFAULT NULL,
    params          jsonb DEFAULT '{}'::jsonb,
    input_metadata  jsonb DEFAULT NULL,
    notify          text[] DEFAULT '{}',
    idempotency_key text DEFAULT NULL,
    submitted_by    text DEFAULT NULL
) RETURNS mediaq.workflow_jobs
    SECURITY DEFINER
    SET search_path = pg_catalog, mediaq, pg_temp
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    wd workflow_definitions;
    job workflow_jobs;
    restricted boolean := NOT has_table_privilege(session_user, 'mediaq.workflow_jobs', 'INSERT');
    submitter text := submit_job.submitted_by;
BEGIN
    IF restricted THEN
        IF submitter IS NOT NULL AND submitter <> session_user THEN
            RAISE EXCEPTION 'a submitter submits as itself (%), not as %', session_user, submitter
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        submitter := session_user;
    END IF;
    IF submit_job.idempotency_key IS NOT NULL THEN
        SELECT * INTO job FROM workflow_jobs j WHERE j.idempotency_key = submit_job.idempotency_key;
        IF FOUND THEN
            IF restricted AND job.submitted_by IS DISTINCT FROM submitter THEN
                RAISE EXCEPTION 'idempotency key % is used by another submitter',
                                submit_job.idempotency_key USING ERRCODE = 'unique_violation';
            END IF;
            RETURN job;
        END IF;
    END IF;
    SELECT * INTO wd FROM workflow_definitions d
     WHERE d.workflow_code = submit_job.workflow_code AND d.is_current;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow % does not exist', submit_job.workflow_code
            USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT wd.is_active THEN
        RAISE EXCEPTION 'workflow % is disabled', submit_job.workflow_code
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF coalesce(submit_job.input_file_path, '') = '' THEN
        RAISE EXCEPTION 'an input file path is required' USING ERRCODE = 'not_null_violation';
    END IF;
    INSERT INTO workflow_jobs (workflow_id, input_file_path, input_metadata, priority, params,
                               notify, idempotency_key, submitted_by)
    VALUES (wd.id, submit_job.input_file_path, submit_job.input_metadata, submit_job.priority,
            coalesce(submit_job.params, '{}'::jsonb), coalesce(submit_job.notify, '{}'),
            submit_job.idempotency_key, submitter)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING * INTO job;
    IF NOT FOUND THEN  -- a concurrent submission with the same key won
        SELECT * INTO job FROM workflow_jobs j WHERE j.idempotency_key = submit_job.idempotency_key;
        IF restricted AND job.submitted_by IS DISTINCT FROM submitter THEN
            RAISE EXCEPTION 'idempotency key % is used by another submitter',
                            submit_job.idempotency_key USING ERRCODE = 'unique_violation';
        END IF;
    END IF;
    RETURN job;
END $$;

REVOKE ALL ON FUNCTION mediaq.submit_job(text, text, integer, jsonb, jsonb, text[], text, text)
    FROM PUBLIC;

-- A submitter's own jobs. security_barrier: a caller's functions in WHERE clauses
-- never see other users' rows.
CREATE OR REPLACE VIEW mediaq.my_jobs WITH (security_barrier) AS
    SELECT * FROM mediaq.workflow_jobs WHERE submitted_by = session_user::text;
COMMENT ON VIEW mediaq.my_jobs IS
    'The jobs submitted by the connected user (session_user): what mediaq_submitter may read.';
