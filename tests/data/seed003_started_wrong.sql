SELECT workflow_id, workflow_stage,
MIN(event_timestamp) AS started_at,
sla_due_timestamp
FROM media_workflow_events
WHERE event_type = 'stage_started'
GROUP BY workflow_id, workflow_stage, sla_due_timestamp;