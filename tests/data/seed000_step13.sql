SELECT
mq.queue_name,
COUNT(*) as jobs_in_queue,
COUNT(CASE WHEN mq.status = 'queued' THEN 1 END) as waiting,
COUNT(CASE WHEN mq.status = 'processing' THEN 1 END) as processing,
AVG(wj.priority) as avg_priority,
MIN(mq.scheduled_time) as next_scheduled
FROM media_queue mq
INNER JOIN workflow_jobs wj ON mq.job_id = wj.id
WHERE mq.status IN ('queued', 'processing')
GROUP BY mq.queue_name
ORDER BY waiting DESC;