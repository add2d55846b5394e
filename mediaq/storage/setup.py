"""Object storage as configured: the worker's ``ObjectStorage`` and the submission doors'
check of an ``s3://`` input."""

from __future__ import annotations

from collections.abc import Callable

from mediaq.config import StorageSettings
from mediaq.errors import InputRefused, PermanentError, SubmissionRefused, TransientError
from mediaq.storage import s3 as s3ops
from mediaq.storage.cache import InputCache
from mediaq.storage.remote import ObjectStorage
from mediaq.storage.uri import PathMap, S3Uri, check_s3_input


def client_settings(storage: StorageSettings) -> s3ops.ClientSettings:
    return s3ops.ClientSettings(endpoint_url=storage.s3_endpoint_url,
                                timeout_seconds=storage.s3_timeout_seconds,
                                multipart_threshold_mb=storage.s3_multipart_mb)


def object_storage(storage: StorageSettings) -> ObjectStorage:
    return ObjectStorage(client_settings(storage),
                         InputCache(storage.effective_cache_dir,
                                    storage.cache_max_mb * 1024 * 1024),
                         storage.remote_output_root, PathMap.parse(storage.path_map),
                         storage.outputs)


Presign = Callable[[str, str, int], str | None]
"""(location, job code, seconds) -> a presigned GET URL, or None when the location is
not an object in that job's folder under the s3:// output root."""


def presigner(storage: StorageSettings) -> Presign | None:
    """How download links reach outputs in object storage: presigned URLs, valid as long
    as a link (None when the outputs are local files, which `mediaq web` serves)."""
    if storage.remote_output_root is None:
        return None
    root = S3Uri.parse(storage.remote_output_root, prefix=True)
    settings = client_settings(storage)

    def presign(location: str, job_code: str, seconds: int) -> str | None:
        try:
            uri = S3Uri.parse(location)
        except InputRefused:
            return None
        if uri.bucket != root.bucket or not uri.key.startswith(f"{root.key}{job_code}/"):
            return None  # never sign an object outside the job's own folder
        return s3ops.presigned_get(s3ops.client(settings), uri, seconds)

    return presign


def check_submitted(text: str, storage: StorageSettings) -> str:
    """An ``s3://`` input as a submission door checks it: inside a bucket-prefix input
    root, and there (one HEAD request); SubmissionRefused with one line otherwise."""
    try:
        uri = check_s3_input(text, storage.bucket_input_roots)
        s3ops.head(s3ops.client(client_settings(storage)), uri)
    except (PermanentError, TransientError) as exc:
        raise SubmissionRefused(exc.message) from None
    return str(uri)


def check_watched_prefix(text: str, storage: StorageSettings) -> str:
    """A bucket prefix as ``watch-folder add`` checks it: inside a bucket-prefix input root
    (every object a watcher submits must pass the workers' check) and listable (one
    LIST request); SubmissionRefused with one line otherwise."""
    try:
        prefix = S3Uri.parse(text, prefix=True)
        roots = [S3Uri.parse(root, prefix=True) for root in storage.bucket_input_roots]
        if not any(prefix.within(root) for root in roots):
            allowed = ", ".join(str(r) for r in roots) or "none configured"
            raise InputRefused(f"{text}: outside the input roots' bucket prefixes ({allowed})")
        next(iter(s3ops.list_objects(s3ops.client(client_settings(storage)), prefix)), None)
    except (PermanentError, TransientError) as exc:
        raise SubmissionRefused(exc.message) from None
    return str(prefix)


def canonical(text: str, storage: StorageSettings) -> str:
    """A local path as the database stores it (``MEDIAQ_PATH_MAP``)."""
    return PathMap.parse(storage.path_map).to_canonical(text)


__all__ = ["S3Uri", "canonical", "check_submitted", "check_watched_prefix", "client_settings",
           "object_storage"]
