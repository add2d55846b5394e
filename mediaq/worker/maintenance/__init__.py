"""Background services every worker runs: rescuing expired leases, tidying slots."""
