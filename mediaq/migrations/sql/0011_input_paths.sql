-- mediaq schema, revision 0011: input paths are refused at every door, not only by the
-- worker. The CLI and the API check a path against the input roots; the database
-- cannot see the file system, but it can refuse what no input root ever allows: a
-- relative path or URL, and a ".." segment, plain or URL-encoded. A symlink out of the
-- roots is still refused by the worker before the file is opened.
-- NOT VALID: rows already there stay as they are; new and changed rows are checked.

SET LOCAL search_path = mediaq, public;

ALTER TABLE workflow_jobs
    ADD CONSTRAINT input_file_path_absolute_without_dot_dot CHECK (
        coalesce(input_file_path, '') = ''
        OR (input_file_path LIKE '/%'
            AND input_file_path !~* '(^|/)(\.|%2e){2}(/|%2f|$)')) NOT VALID;
