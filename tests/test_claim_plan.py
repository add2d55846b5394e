"""The hot claim query keeps using its partial index as the queue grows (PgQueuer's
query-plan regression idea): a sequential scan here would make every claim O(jobs).
Claims take tasks (issue 18): the index is the ready tasks'."""

from __future__ import annotations

import json

from mediaq.queries import queries
from tests.helpers import MediaqEnv, diagnostic_workflow


def test_claim_uses_the_ready_tasks_index(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-PLAN", {"action": "noop"}))
    with mq.connect() as conn:
        conn.execute("""INSERT INTO workflow_jobs (workflow_id, input_file_path, status)
                        SELECT (SELECT id FROM workflow_definitions WHERE workflow_code = 'T-PLAN'),
                               '/in/x', CASE WHEN n % 10 = 0 THEN 'pending' ELSE 'completed' END
                          FROM generate_series(1, 20000) AS n""")
        conn.execute("INSERT INTO worker_hosts (host) VALUES ('h')")
        conn.execute("INSERT INTO worker_slots (host, category, slot) VALUES ('h', 'cpu', 1)")
        conn.execute("ANALYZE")
        params = {"host": "h", "category": "cpu", "gpu": False, "limit": 1, "vram_free_mb": 0,
                  "queues": None, "worker_id": "w", "lease_seconds": 10,
                  "log_line": "x", "prefer_job_id": None, "only_preferred": False}
        conn.execute("BEGIN")
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + queries["task_claim_next"],
                            params).fetchone()
        conn.execute("ROLLBACK")
    text = json.dumps(plan)
    assert "job_tasks_ready" in text
    assert '"Relation Name": "job_tasks", "Node Type": "Seq Scan"' not in text
    assert '"Relation Name": "workflow_jobs", "Node Type": "Seq Scan"' not in text
