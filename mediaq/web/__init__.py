"""``mediaq web``: the HTTP API of seed 001, the live dashboard and Prometheus /metrics."""
