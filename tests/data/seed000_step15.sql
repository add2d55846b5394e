SELECT
wd.workflow_name,
wd.workflow_type,
COUNT(wj.id) as total_jobs,
COUNT(CASE WHEN wj.status = 'completed' THEN 1 END) as completed,
COUNT(CASE WHEN wj.status = 'failed' THEN 1 END) as failed,
COUNT(CASE WHEN wj.status IN ('pending', 'queued', 'processing') THEN 1 END) as in_progress,
AVG(CASE WHEN wj.completed_at IS NOT NULL
THEN EXTRACT(EPOCH FROM (wj.completed_at - wj.started_at)) / 60
END) as avg_duration_minutes
FROM workflow_definitions wd
LEFT JOIN workflow_jobs wj ON wd.id = wj.workflow_id
WHERE wd.is_active = TRUE
GROUP BY wd.id, wd.workflow_name, wd.workflow_type
ORDER BY total_jobs DESC;