"""Other queues, run side by side with mediaq on the same PostgreSQL server.

``bare.py`` runs in mediaq's own environment (psycopg only); ``pgq.py`` and
``procr.py`` run in the bench's peers environment (see ``benchmarks.common.peers_python``),
so pgqueuer and procrastinate never enter mediaq's dependencies. Each script prints one
JSON object on its last line of stdout.
"""
