-- mediaq schema, revision 0029: watch folders on bucket prefixes. An object's version is
-- its ETag (what the store says its content is): one job per (folder, key, ETag),
-- whichever host lists it first; a key re-uploaded with new content gets a new one.

SET LOCAL search_path = mediaq, public;

-- The ETag joins the primary key: two uploads of a key in the same second (S3's
-- LastModified precision) with the same size are still two versions. A file's is ''.
ALTER TABLE watch_files ADD COLUMN etag TEXT NOT NULL DEFAULT '';
ALTER TABLE watch_files DROP CONSTRAINT watch_files_pkey,
    ADD PRIMARY KEY (folder_id, rel_path, size_bytes, mtime_ns, etag);
CREATE UNIQUE INDEX watch_files_object_version ON watch_files (folder_id, rel_path, etag)
    WHERE etag <> '';

DROP FUNCTION watch_submit(integer, text[], bigint[], bigint[]);
-- Submit the settled files (or objects) a watcher found; only versions no one submitted
-- before get a job. A file's version is (size, mtime); an object's is its ETag, which
-- watch_files_object_version keeps unique per key, so every host listing the same
-- prefix submits an object once however its LastModified reads. Returns the new jobs.
-- A refused submission (workflow gone or disabled) rolls the whole call back, so the
-- files are tried again at the next scan.
CREATE FUNCTION watch_submit(folder_id integer, rel_paths text[],
                             sizes bigint[], mtimes bigint[], etags text[] DEFAULT NULL)
    RETURNS TABLE (rel_path text, job_code text)
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    folder watch_folders;
    seen   record;
    job    workflow_jobs;
BEGIN
    SELECT * INTO folder FROM watch_folders f WHERE f.id = watch_submit.folder_id;
    IF NOT FOUND THEN
        RETURN;  -- removed while the scan ran
    END IF;
    FOR seen IN
        -- Without a conflict target, DO NOTHING covers the primary key (a file's
        -- version) and the partial unique index (an object's) alike; a file's etag is ''.
        INSERT INTO watch_files AS w (folder_id, rel_path, size_bytes, mtime_ns, etag)
        SELECT folder.id, p, s, m, coalesce(e, '')
          FROM unnest(rel_paths, sizes, mtimes, etags) AS t(p, s, m, e)
        ON CONFLICT DO NOTHING
        RETURNING w.rel_path, w.size_bytes, w.mtime_ns, w.etag
    LOOP
        job := submit_job(folder.workflow_code,
                          rtrim(folder.path, '/') || '/' || seen.rel_path,
                          folder.priority, folder.params,
                          jsonb_build_object('watch_folder', folder.id,
                                             'size_bytes', seen.size_bytes,
                                             'mtime_ns', seen.mtime_ns)
                          || CASE WHEN seen.etag = '' THEN '{}'::jsonb
                                  ELSE jsonb_build_object('etag', seen.etag) END,
                          '{}', NULL, 'watch:' || folder.id);
        UPDATE watch_files w SET job_id = job.id
         WHERE w.folder_id = folder.id AND w.rel_path = seen.rel_path
           AND w.size_bytes = seen.size_bytes AND w.mtime_ns = seen.mtime_ns
           AND w.etag = seen.etag;
        rel_path := seen.rel_path;
        job_code := job.job_code;
        RETURN NEXT;
    END LOOP;
    UPDATE watch_folders f SET last_scan_at = now(), last_error = NULL
     WHERE f.id = folder.id;
END $$;
