"""The worker daemon: claim (producer), run (executor), write outcomes (job handle),
keep leases (heartbeat) and rescue the jobs of lost workers (maintenance)."""
