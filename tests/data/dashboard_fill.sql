-- tests/test_dashboard_views.py: a few hundred jobs in every state over the last hour,
-- inserted as another application would (INSERTs are not state moves), two hosts with
-- workers and slots, and GPU step runs for the VRAM chart.
INSERT INTO workflow_jobs (workflow_id, input_file_path, status, priority, resource_category,
                           vram_required, submitted_at, started_at, completed_at, error_message,
                           error_class, progress_percent)
SELECT d.id, '/data/in/clip_' || g || '.mp4',
       (ARRAY['completed','completed','completed','failed','pending','queued','paused',
              'cancelled'])[1 + g % 8],
       1 + g % 10, (ARRAY['cpu','gpu_encode','gpu_ai'])[1 + g % 3],
       CASE WHEN g % 3 = 0 THEN 0 ELSE 2000 END,
       now() - make_interval(secs => 60 * 58 - g * 10),
       CASE WHEN g % 8 IN (0, 1, 2, 3) THEN now() - make_interval(secs => 60 * 58 - g * 10 - 20) END,
       CASE WHEN g % 8 IN (0, 1, 2, 3, 7) THEN now() - make_interval(secs => 60 * 58 - g * 10 - 50) END,
       CASE WHEN g % 8 = 3 THEN (ARRAY['clip_' || g || '.mp4: moov atom not found',
                                      'disk full while writing clip_' || g || '.mp4'])[1 + (g / 8) % 2] END,
       CASE WHEN g % 8 = 3 THEN (ARRAY['permanent', 'transient'])[1 + (g / 8) % 2]
            WHEN g % 8 = 7 THEN 'cancelled' END,
       CASE WHEN g % 8 IN (0, 1, 2, 3) THEN 100 ELSE 0 END
  FROM generate_series(1, 320) g, workflow_definitions d
 WHERE d.workflow_code = 'WF-DASH-MEDIA' AND d.is_current;
INSERT INTO worker_hosts (host, vram_budget_mb, vram_reserved_mb)
VALUES ('gpu-a', 24000, 6000), ('cpu-b', 0, 0);
INSERT INTO workers (worker_id, host, pid, categories, limits, vram_budget_mb, heartbeat_at)
VALUES ('gpu-a:101', 'gpu-a', 101, '{gpu_encode,gpu_ai}', '{"gpu_encode": 2, "gpu_ai": 1}',
        24000, now() - interval '3 seconds'),
       ('cpu-b:7', 'cpu-b', 7, '{cpu}', '{"cpu": 4}', 0, now() - interval '1 second');
INSERT INTO worker_slots (host, category, slot, job_id, vram_mb, worker_id, taken_at)
VALUES ('gpu-a', 'gpu_encode', 1, NULL, 0, NULL, NULL), ('gpu-a', 'gpu_encode', 2, NULL, 0, NULL, NULL),
       ('gpu-a', 'gpu_ai', 1, NULL, 0, NULL, NULL),
       ('cpu-b', 'cpu', 1, NULL, 0, NULL, NULL), ('cpu-b', 'cpu', 2, NULL, 0, NULL, NULL);
INSERT INTO step_executions (job_id, step_id, status, started_at, completed_at, worker_id)
SELECT j.id, s.id, 'completed', j.started_at, j.completed_at, 'gpu-a:101'
  FROM workflow_jobs j JOIN workflow_steps s ON s.workflow_id = j.workflow_id AND s.step_number = 1
 WHERE j.status = 'completed' AND j.resource_category <> 'cpu' AND j.input_file_path LIKE '/data/%';
