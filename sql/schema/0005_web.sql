-- mediaq schema, revision 0005: The HTTP API: tokens, hashed, with roles.
-- Applied by migrations/versions/0005_web.py into schema "mediaq".
SET LOCAL search_path = mediaq, public;
