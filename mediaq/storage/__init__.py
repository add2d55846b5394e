"""Where media lives besides local folders: ``s3://`` objects on any S3-compatible store,
a worker-local cache of them, and per-host path mappings.

- ``uri``: parsing ``s3://bucket/key`` and matching it against bucket-prefix roots;
  ``MEDIAQ_PATH_MAP`` translation between canonical and local paths.
- ``s3``: the boto3 client (standard AWS settings, ``MEDIAQ_S3_ENDPOINT_URL`` over them)
  and the one place its errors become one-line permanent or transient errors.
- ``cache``: whole objects fetched once per host, content-addressed, size-capped, LRU.
- ``remote``: outputs uploaded under an attempt's own key and copied to their final
  key only after the fenced commit recorded them; the sweep of what killed attempts
  left behind.

Nothing here touches the database: the worker calls in at its few hooks.
"""

from mediaq.storage.uri import PathMap, S3Uri, is_s3

__all__ = ["PathMap", "S3Uri", "is_s3"]
