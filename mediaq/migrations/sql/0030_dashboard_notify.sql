-- mediaq schema, revision 0030: the dashboard's NOTIFY channel (mediaq_dashboard).

SET LOCAL search_path = mediaq, public;

-- The dashboard's wake-up: one NOTIFY on 'mediaq_dashboard' per statement that changed
-- what a dashboard shows of a job (its status, progress, stage, priority, waiting
-- reason; a job added or deleted). `mediaq web` LISTENs on one session per process and
-- fans the change out to its browsers (mediaq/web/live.py), so an open dashboard costs
-- no statement while nothing changes. Lease renewals and heartbeats do not notify.
-- Once per statement, and PostgreSQL folds identical notifications of a transaction.
CREATE FUNCTION jobs_notify_dashboard() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT FROM changed_jobs n JOIN previous_jobs o USING (id)
                        WHERE n.status IS DISTINCT FROM o.status
                           OR n.progress_percent IS DISTINCT FROM o.progress_percent
                           OR n.progress_stage IS DISTINCT FROM o.progress_stage
                           OR n.priority IS DISTINCT FROM o.priority
                           OR n.waiting_reason IS DISTINCT FROM o.waiting_reason) THEN
            RETURN NULL;
        END IF;
    ELSIF NOT EXISTS (SELECT FROM changed_jobs) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('mediaq_dashboard', '');
    RETURN NULL;
END $$;

CREATE TRIGGER workflow_jobs_dashboard_insert AFTER INSERT ON workflow_jobs
    REFERENCING NEW TABLE AS changed_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_dashboard();
CREATE TRIGGER workflow_jobs_dashboard_update AFTER UPDATE ON workflow_jobs
    REFERENCING OLD TABLE AS previous_jobs NEW TABLE AS changed_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_dashboard();
CREATE TRIGGER workflow_jobs_dashboard_delete AFTER DELETE ON workflow_jobs
    REFERENCING OLD TABLE AS changed_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_dashboard();
