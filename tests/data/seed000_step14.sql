SELECT
ws.step_name,
ws.step_type,
COUNT(se.id) as executions,
AVG(se.duration_seconds) as avg_duration_sec,
MIN(se.duration_seconds) as min_duration_sec,
MAX(se.duration_seconds) as max_duration_sec,
COUNT(CASE WHEN se.status = 'failed' THEN 1 END) as failures
FROM workflow_steps ws
LEFT JOIN step_executions se ON ws.id = se.step_id
GROUP BY ws.id, ws.step_name, ws.step_type
ORDER BY avg_duration_sec DESC;