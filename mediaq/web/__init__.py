"""``mediaq web``: the HTTP job API under /api/media, the live dashboard and Prometheus /metrics."""
