-- Catalog queries of tests/test_migrations.py: what schema "mediaq" holds, one row per
-- object, as text that does not depend on OIDs or creation order.

-- name: relations
-- Every table, view, sequence and index: its kind, options, privileges and comment.
SELECT c.relname, c.relkind::text, c.reloptions::text, c.relacl::text,
       obj_description(c.oid, 'pg_class') AS comment
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'mediaq';

-- name: columns
-- Every column of every table and view: position, type, NOT NULL, default, identity.
SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull, pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       a.attidentity::text, a.attgenerated::text,
       col_description(c.oid, a.attnum) AS comment
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE n.nspname = 'mediaq' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND a.attnum > 0 AND NOT a.attisdropped;

-- name: constraints
-- Every constraint of every table, and whether it is validated.
SELECT c.conrelid::regclass::text AS relation, c.conname, c.contype::text,
       pg_get_constraintdef(c.oid) AS definition, c.convalidated
  FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
 WHERE n.nspname = 'mediaq';

-- name: indexes
-- Every index, as CREATE INDEX.
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'mediaq';

-- name: functions
-- Every function, as CREATE FUNCTION, with its privileges and comment.
SELECT p.oid::regprocedure::text AS signature, pg_get_functiondef(p.oid) AS definition,
       p.proacl::text, obj_description(p.oid, 'pg_proc') AS comment
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'mediaq';

-- name: triggers
-- Every trigger a user made, as CREATE TRIGGER.
SELECT t.tgrelid::regclass::text AS relation, t.tgname, pg_get_triggerdef(t.oid) AS definition,
       t.tgenabled::text
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'mediaq' AND NOT t.tgisinternal;

-- name: views
-- Every view's query.
SELECT c.relname, pg_get_viewdef(c.oid, true) AS definition
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'mediaq' AND c.relkind IN ('v', 'm');

-- name: sequences
-- Every sequence's parameters.
SELECT s.seqrelid::regclass::text AS name, format_type(s.seqtypid, NULL) AS type,
       s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle
  FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'mediaq';

-- name: types
-- Every type (row types of tables and views included, arrays too).
SELECT t.typname, t.typtype::text, format_type(t.typbasetype, t.typtypmod) AS base,
       (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e
         WHERE e.enumtypid = t.oid) AS labels
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = 'mediaq';

-- name: alembic_version
-- The revision Alembic's version table records.
SELECT version_num FROM mediaq.alembic_version;

-- name: job_state_machine
-- The rows of the state machine's tables (data, not catalog, but schema all the same).
SELECT 'status' AS kind, status AS name, terminal::text AS detail, description
  FROM mediaq.job_statuses
UNION ALL
SELECT 'transition', from_status || ' -> ' || to_status, NULL, description
  FROM mediaq.job_status_transitions;
