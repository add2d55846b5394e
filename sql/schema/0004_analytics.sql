-- mediaq schema, revision 0004: Analytics views: the dashboards and workflow-operations questions as SQL.
-- Applied by migrations/versions/0004_analytics.py into schema "mediaq".
SET LOCAL search_path = mediaq, public;
