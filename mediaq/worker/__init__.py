"""The worker daemon: claim (producer), run and decide (executor, outcomes), write the
outcomes (completer, through the fenced job handle), keep leases (heartbeat) and rescue
the jobs of lost workers (maintenance)."""
