SET LOCAL search_path = mediaq, public;

-- A worker coming or going changes what the dashboard promises (a waiting job's ETA, or
-- the reason it has none): its registration and its status changes wake the dashboard
-- too. Heartbeats leave the status alone and stay silent.
CREATE FUNCTION workers_notify_dashboard() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mediaq_dashboard', '');
    RETURN NULL;
END $$;

CREATE TRIGGER workers_dashboard_insert AFTER INSERT ON workers
    FOR EACH STATEMENT EXECUTE FUNCTION workers_notify_dashboard();
CREATE TRIGGER workers_dashboard_status AFTER UPDATE OF status ON workers
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION workers_notify_dashboard();
