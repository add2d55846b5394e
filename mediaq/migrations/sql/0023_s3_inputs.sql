-- mediaq schema, revision 0023: inputs may be s3:// objects. The input path check of
-- revision 0011 allowed absolute paths only; an s3://bucket/key is now let through (the
-- same ".." refusal applies to its key). Which buckets are allowed is the input roots'
-- business, checked by the doors that can see them and by the worker.
-- NOT VALID: rows already there stay as they are; new and changed rows are checked.

SET LOCAL search_path = mediaq, public;

ALTER TABLE workflow_jobs DROP CONSTRAINT input_file_path_absolute_without_dot_dot;
ALTER TABLE workflow_jobs
    ADD CONSTRAINT input_file_path_absolute_without_dot_dot CHECK (
        coalesce(input_file_path, '') = ''
        OR ((input_file_path LIKE '/%' OR input_file_path LIKE 's3://%')
            AND input_file_path !~* '(^|/)(\.|%2e){2}(/|%2f|$)')) NOT VALID;
