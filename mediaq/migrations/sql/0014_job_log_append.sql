-- mediaq schema, revision 0014: the job log stays under 10 KB whoever appends to it.
-- Until now only the statement actions log through (job_append_log) cut the log; the
-- engine's and the operators' own lines were appended with a bare `log || line`. Every
-- statement now appends through job_log_append (mediaq/sql/queries.sql).

SET LOCAL search_path = mediaq, public;

-- ===========================================================================
-- The job log: every line appended through job_log_append, so it stays under 10 KB
-- ===========================================================================
-- `log || lines`, cut in the middle once it passes 10240 bytes: an action may log
-- without end (a chatty encoder, a loop), and every statement that writes a job's log
-- appends through here. A cut leaves at most 8192 bytes: the head (the lines within the
-- first 2048 bytes), one marker line "… N bytes cut …" and the newest lines in the
-- bytes left, cut just after a newline byte (never inside a UTF-8 character). N counts
-- every byte dropped so far: an earlier cut's head and count are read back from its
-- marker, looked for in the first 2200 characters only (where a head of 2048 bytes and
-- its marker end). Cutting to 8 KB, not 10, leaves about 2 KB of lines before the next
-- cut: a log over the cap is cut once per 2 KB, not once per line, and below the cap
-- this is one concatenation.
CREATE FUNCTION job_log_append(log text, lines text) RETURNS text
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    whole text := coalesce(log, '') || coalesce(lines, '');
    earlier text[];
    head text;
    cut_before bigint := 0;
    consumed integer;
    rest bytea;
    budget integer;
    last bytea;
    newline integer;
    tail bytea;
BEGIN
    IF octet_length(whole) <= 10240 THEN
        RETURN whole;
    END IF;
    earlier := regexp_match(left(whole, 2200), E'^(.*?\n)(… ([0-9]+) bytes cut …\n)');
    IF earlier IS NOT NULL THEN
        head := earlier[1];
        cut_before := earlier[3]::bigint;
        consumed := length(earlier[1]) + length(earlier[2]);
    ELSE
        SELECT string_agg(l.line, '' ORDER BY l.n) INTO head
          FROM (SELECT m[1] AS line, n, sum(octet_length(m[1])) OVER (ORDER BY n) AS upto
                  FROM regexp_matches(left(whole, 2048), E'([^\n]*\n)', 'g')
                       WITH ORDINALITY AS t(m, n)) l
         WHERE l.upto <= 2048;
        -- a first line longer than 2048 bytes: its first 500 characters
        consumed := coalesce(length(head), 500);
        head := coalesce(head, left(whole, 500) || E'\n');
    END IF;
    rest := convert_to(substring(whole FROM consumed + 1), 'UTF8');
    budget := 8192 - 64 - octet_length(head);  -- 64: room for the marker line
    IF octet_length(rest) <= budget THEN
        tail := rest;
    ELSE
        last := substring(rest FROM octet_length(rest) - budget + 1);
        newline := position('\x0a'::bytea IN substring(last FOR octet_length(last) - 1));
        tail := CASE WHEN newline > 0 THEN substring(last FROM newline + 1)
                     -- no line starts there: the end of one long line, in whole characters
                     ELSE convert_to(right(convert_from(rest, 'UTF8'), budget / 4), 'UTF8')
                END;
    END IF;
    RETURN head || format(E'… %s bytes cut …\n',
                          cut_before + octet_length(rest) - octet_length(tail))
           || convert_from(tail, 'UTF8');
END $$;
