-- PostgreSQL roles for using mediaq from SQL directly; run by `mediaq db roles`, in one
-- transaction, by the owner of the mediaq schema or a superuser. Idempotent: run it
-- again after every `mediaq db upgrade` (a migration that replaces a function resets
-- what this file sets on it).
--
--   mediaq_submitter  NOLOGIN group role: may EXECUTE mediaq.submit_job(...) and
--                     SELECT its own jobs through the view mediaq.my_jobs; nothing else.
--                     Its jobs are submitted_by = its login name (session_user).
--   mediaq_reader     NOLOGIN group role: SELECT on every table and view in schema
--                     mediaq; nothing else.
--
-- LOGIN users are granted these roles (`mediaq db roles --login alice:submitter`).

SET LOCAL search_path = pg_catalog, mediaq, pg_temp;

-- ---------------------------------------------------------------------------
-- The group roles (cluster-wide; the grants below are per database)
-- ---------------------------------------------------------------------------
DO $$
DECLARE
    wanted text;
BEGIN
    FOREACH wanted IN ARRAY ARRAY['mediaq_submitter', 'mediaq_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = wanted) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', wanted);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created by a concurrent run
            END;
        END IF;
    END LOOP;
END $$;

GRANT USAGE ON SCHEMA mediaq TO mediaq_submitter, mediaq_reader;

-- ---------------------------------------------------------------------------
-- Functions run for a submitter with the owner's rights must not be fooled by the
-- caller's temporary objects: a relation in pg_temp is found before any schema
-- unless pg_temp is listed last. Every mediaq function that fixes its search_path
-- gets pg_temp appended (those that do not fix it inherit the caller's, submit_job's).
-- ---------------------------------------------------------------------------
DO $$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure AS signature, substr(cfg, length('search_path=') + 1) AS path
          FROM pg_proc p CROSS JOIN LATERAL unnest(p.proconfig) AS cfg
         WHERE p.pronamespace = 'mediaq'::regnamespace
           AND cfg LIKE 'search_path=%'
           AND cfg NOT LIKE '%pg\_temp%'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %s, pg_temp', f.signature, f.path);
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------
-- submit_job (revision 0008) runs with its owner's rights and knows submitters; the
-- view mediaq.my_jobs shows a submitter its own jobs.
-- ---------------------------------------------------------------------------
GRANT EXECUTE ON FUNCTION
    mediaq.submit_job(text, text, integer, jsonb, jsonb, text[], text, text)
    TO mediaq_submitter;
GRANT SELECT ON mediaq.my_jobs TO mediaq_submitter;

-- ---------------------------------------------------------------------------
-- Reader: SELECT on every table and view, now and (for objects created later by the
-- role running this file, normally the one that runs the migrations) in the future.
-- ---------------------------------------------------------------------------
GRANT SELECT ON ALL TABLES IN SCHEMA mediaq TO mediaq_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA mediaq GRANT SELECT ON TABLES TO mediaq_reader;
