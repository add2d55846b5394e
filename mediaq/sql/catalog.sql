-- The media library catalog (issue 24): statements of mediaq/catalog.py.

-- name: asset_upsert
-- Record a file's facts; a fact not known this time (NULL) keeps the one known before.
-- origin only rises scan -> input -> output (an output stays an output when scanned).
INSERT INTO mediaq.assets AS a
       (path, content_hash, kind, size_bytes, duration, width, height, container,
        video_codec, audio_codec, hdr, loudness_lufs, page_count, faces_count, scene_count,
        thumbnail_path, derived_from, origin, facts)
VALUES (%(path)s, %(content_hash)s, %(kind)s, %(size_bytes)s, %(duration)s, %(width)s,
        %(height)s, %(container)s, %(video_codec)s, %(audio_codec)s, %(hdr)s,
        %(loudness_lufs)s, %(page_count)s, %(faces_count)s, %(scene_count)s,
        %(thumbnail_path)s, %(derived_from)s, %(origin)s, %(facts)s)
ON CONFLICT ((md5(path))) DO UPDATE SET
    content_hash   = coalesce(EXCLUDED.content_hash, a.content_hash),
    kind           = EXCLUDED.kind,
    size_bytes     = coalesce(EXCLUDED.size_bytes, a.size_bytes),
    duration       = coalesce(EXCLUDED.duration, a.duration),
    width          = coalesce(EXCLUDED.width, a.width),
    height         = coalesce(EXCLUDED.height, a.height),
    container      = coalesce(EXCLUDED.container, a.container),
    video_codec    = coalesce(EXCLUDED.video_codec, a.video_codec),
    audio_codec    = coalesce(EXCLUDED.audio_codec, a.audio_codec),
    hdr            = coalesce(EXCLUDED.hdr, a.hdr),
    loudness_lufs  = coalesce(EXCLUDED.loudness_lufs, a.loudness_lufs),
    page_count     = coalesce(EXCLUDED.page_count, a.page_count),
    faces_count    = coalesce(EXCLUDED.faces_count, a.faces_count),
    scene_count    = coalesce(EXCLUDED.scene_count, a.scene_count),
    thumbnail_path = coalesce(EXCLUDED.thumbnail_path, a.thumbnail_path),
    derived_from   = coalesce(EXCLUDED.derived_from, a.derived_from),
    origin         = CASE WHEN a.origin = 'output' OR EXCLUDED.origin = 'output' THEN 'output'
                          WHEN a.origin = 'input' OR EXCLUDED.origin = 'input' THEN 'input'
                          ELSE 'scan' END,
    facts          = a.facts || EXCLUDED.facts,
    updated_at     = now()
RETURNING id;

-- name: asset_tag_upsert
-- Set one tag of an asset (a later score from the same or another source replaces it).
INSERT INTO mediaq.asset_tags (asset_id, tag, score, source)
VALUES (%(asset_id)s, %(tag)s, %(score)s, %(source)s)
ON CONFLICT (asset_id, tag) DO UPDATE SET score = EXCLUDED.score, source = EXCLUDED.source;

-- name: asset_job_link
-- Remember that a job used (input) or made (output) an asset.
INSERT INTO mediaq.asset_jobs (asset_id, job_id, role, step)
VALUES (%(asset_id)s, %(job_id)s, %(role)s, %(step)s)
ON CONFLICT (asset_id, job_id, role) DO NOTHING;

-- name: asset_job_facts
-- A job's input and, per completed step in step order, its action and output_data: what
-- the catalog reads once the job has completed.
SELECT w.input_file_path, ws.step_number, ws.action, se.output_data
  FROM mediaq.workflow_jobs w
  LEFT JOIN mediaq.step_executions se ON se.job_id = w.id AND se.status = 'completed'
  LEFT JOIN mediaq.workflow_steps ws ON ws.id = se.step_id
 WHERE w.id = %(job_id)s
 ORDER BY ws.step_number NULLS FIRST;

-- name: asset_get
-- One asset of the library view, by id.
SELECT * FROM mediaq.asset_library WHERE id = %(id)s;

-- name: asset_tags_of
-- The tags of one asset, best first.
SELECT tag, score, source FROM mediaq.asset_tags WHERE asset_id = %(id)s
 ORDER BY score DESC, tag;

-- name: assets_search
-- The library filtered (every filter optional: NULL means any), newest first. The
-- kind/orientation/duration index serves the usual filters; a tag filter walks
-- asset_tags_tag.
SELECT l.*
  FROM mediaq.asset_library l
 WHERE (%(kind)s::text IS NULL OR l.kind = %(kind)s)
   AND (%(orientation)s::text IS NULL OR l.orientation = %(orientation)s)
   AND (%(min_duration)s::float8 IS NULL OR l.duration >= %(min_duration)s)
   AND (%(max_duration)s::float8 IS NULL OR l.duration <= %(max_duration)s)
   AND (%(tag)s::text IS NULL
        OR EXISTS (SELECT 1 FROM mediaq.asset_tags t
                    WHERE t.asset_id = l.id AND t.tag = %(tag)s
                      AND t.score >= %(min_score)s))
   AND (%(path_prefix)s::text IS NULL OR starts_with(l.path, %(path_prefix)s))
 ORDER BY l.id DESC
 LIMIT %(limit)s;

-- name: assets_matching_ids
-- The ids and paths of assets matching the filters (as assets_search), in id order: the
-- candidates compile_random draws from. id order and the seed make a draw repeatable.
SELECT a.id, a.path, a.duration, a.orientation
  FROM mediaq.assets a
 WHERE a.kind = 'video'
   AND (%(orientation)s::text IS NULL OR a.orientation = %(orientation)s)
   AND (%(min_duration)s::float8 IS NULL OR a.duration >= %(min_duration)s)
   AND (%(max_duration)s::float8 IS NULL OR a.duration <= %(max_duration)s)
   AND (%(tag)s::text IS NULL
        OR EXISTS (SELECT 1 FROM mediaq.asset_tags t
                    WHERE t.asset_id = a.id AND t.tag = %(tag)s
                      AND t.score >= %(min_score)s))
 ORDER BY a.id;

-- name: assets_summary
-- Counts per kind and orientation (the library's header line).
SELECT kind, orientation, count(*) AS assets,
       round(coalesce(sum(duration), 0)::numeric, 1)::float8 AS total_seconds
  FROM mediaq.assets GROUP BY kind, orientation ORDER BY kind, orientation;
