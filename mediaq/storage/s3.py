"""The S3 client (boto3) and the one boundary where its errors become ours.

Credentials, region and endpoint come from boto3's own chain: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` and the shared config files, instance roles,
``AWS_ENDPOINT_URL(_S3)``; ``AWS_REGION`` is honoured too, and ``MEDIAQ_S3_ENDPOINT_URL``
wins over all endpoints. No secret is ever put in a message: errors name the location,
the endpoint and the store's error code only.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import boto3.exceptions
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from s3transfer.exceptions import RetriesExceededError, S3UploadFailedError

from mediaq.errors import InputRefused, PermanentError, TransientError
from mediaq.storage.uri import S3Uri

# Content types the standard library does not know (or gets wrong for streaming).
_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl", ".mpd": "application/dash+xml",
    ".m4s": "video/iso.segment", ".ts": "video/mp2t", ".webp": "image/webp",
    ".avif": "image/avif", ".heic": "image/heic", ".opus": "audio/ogg",
    ".flac": "audio/flac", ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".vtt": "text/vtt",
    ".json": "application/json", ".mkv": "video/x-matroska", ".webm": "video/webm",
}
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "AllAccessDisabled", "AccountProblem", "InvalidToken", "ExpiredToken"}


def content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


@dataclass(frozen=True)
class ClientSettings:
    endpoint_url: str | None = None
    timeout_seconds: float = 60.0  # a connection silent this long is a stalled transfer
    multipart_threshold_mb: int = 8


_clients: dict[ClientSettings, Any] = {}
_lock = threading.Lock()


def client(settings: ClientSettings) -> Any:
    """One boto3 client per process and settings (clients are thread-safe; making one
    is not, and costs tens of milliseconds)."""
    with _lock:
        found = _clients.get(settings)
        if found is None:
            session = boto3.session.Session(region_name=os.environ.get("AWS_REGION") or None)
            region = session.region_name or "us-east-1"  # S3-compatible stores ignore it
            config = botocore.config.Config(
                connect_timeout=min(settings.timeout_seconds, 10),
                read_timeout=settings.timeout_seconds,
                retries={"max_attempts": 3, "mode": "standard"},
                # Path-style addressing for custom endpoints: MinIO, Ceph, moto serve
                # buckets under the path, not as host names.
                s3={"addressing_style": "path"} if settings.endpoint_url else None,
                # Checksums only where the operation requires them: several
                # S3-compatible stores refuse the newer default trailing checksums.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required")
            found = session.client("s3", endpoint_url=settings.endpoint_url or None,
                                   region_name=region, config=config)
            _clients[settings] = found
        return found


def transfer_config(settings: ClientSettings) -> TransferConfig:
    size = settings.multipart_threshold_mb * 1024 * 1024
    return TransferConfig(multipart_threshold=size, multipart_chunksize=max(size, 5 << 20),
                          max_concurrency=4)


def endpoint_of(s3: Any) -> str:
    return str(s3.meta.endpoint_url)


@contextmanager
def translated(uri: S3Uri | str, s3: Any, *, missing: type[PermanentError] = PermanentError
               ) -> Iterator[None]:
    """Turn what boto3 raises into one line naming the location: a missing object or
    bucket and a refusal are permanent; an unreachable, slow or failing store is
    transient (it may come back)."""
    try:
        yield
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
            boto3.exceptions.Boto3Error, OSError) as exc:
        raise _translate(exc, str(uri), endpoint_of(s3), missing) from None


def _translate(exc: BaseException, where: str, endpoint: str,
               missing: type[PermanentError]) -> PermanentError | TransientError:
    # boto3's transfer manager wraps the client's errors: look at what it wrapped.
    if isinstance(exc, boto3.exceptions.RetriesExceededError | RetriesExceededError):
        return _translate(exc.last_exception, where, endpoint, missing)
    if (isinstance(exc, boto3.exceptions.S3UploadFailedError | S3UploadFailedError)
            and exc.__context__ is not None):
        return _translate(exc.__context__, where, endpoint, missing)
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "NoSuchBucket":
            return missing(f"{where}: no such bucket")
        if code in _NOT_FOUND:
            return missing(f"{where}: no such object")
        if code in ("PreconditionFailed", "412"):
            return TransientError(f"{where}: the object changed while it was read")
        if code in _DENIED or status == 403:
            return PermanentError(f"{where}: access denied ({code or status})")
        if status >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError"):
            return TransientError(f"{where}: the store failed ({code or status})")
        return PermanentError(f"{where}: refused by the store ({code or status})")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return PermanentError(f"{where}: no S3 credentials (set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, or a profile)")
    if isinstance(exc, botocore.exceptions.ReadTimeoutError
                  | botocore.exceptions.ResponseStreamingError):
        return TransientError(f"{where}: the transfer stalled ({type(exc).__name__})")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError
                  | botocore.exceptions.ConnectTimeoutError
                  | botocore.exceptions.ConnectionClosedError):
        return TransientError(f"{where}: cannot reach the S3 endpoint {endpoint}")
    if isinstance(exc, OSError) and exc.strerror:  # the local side of a transfer
        return TransientError(f"{where}: {exc.strerror}")
    return TransientError(f"{where}: {type(exc).__name__}")


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str  # without quotes; "<md5>" or "<md5>-<parts>" for a multipart upload
    version_id: str | None


def head(s3: Any, uri: S3Uri, *, missing: type[PermanentError] = InputRefused) -> ObjectInfo:
    with translated(uri, s3, missing=missing):
        answer = s3.head_object(Bucket=uri.bucket, Key=uri.key)
    return ObjectInfo(int(answer["ContentLength"]), str(answer["ETag"]).strip('"'),
                      answer.get("VersionId"))


def download(s3: Any, uri: S3Uri, target: Path, settings: ClientSettings,
             on_bytes: Callable[[int], None], info: ObjectInfo) -> None:
    """Stream the object into ``target``: the version HEAD saw where the bucket keeps
    versions (the transfer manager itself pins ranged parts to one ETag; the cache then
    checks size and ETag)."""
    extra = {"VersionId": info.version_id} if info.version_id else {}
    with translated(uri, s3, missing=InputRefused):
        s3.download_file(uri.bucket, uri.key, str(target), ExtraArgs=extra,
                         Callback=on_bytes, Config=transfer_config(settings))


def upload(s3: Any, source: Path, uri: S3Uri, settings: ClientSettings,
           on_bytes: Callable[[int], None] | None = None) -> None:
    with translated(uri, s3):
        s3.upload_file(str(source), uri.bucket, uri.key,
                       ExtraArgs={"ContentType": content_type(uri.key)},
                       Callback=on_bytes, Config=transfer_config(settings))


def copy(s3: Any, source: S3Uri, target: S3Uri, settings: ClientSettings) -> None:
    """A server-side copy (multipart for large objects); the metadata, content type
    included, goes with it. Copying the same source again gives the same object."""
    with translated(target, s3):
        s3.copy({"Bucket": source.bucket, "Key": source.key}, target.bucket, target.key,
                Config=transfer_config(settings))


def delete_prefix(s3: Any, prefix: S3Uri) -> int:
    """Delete every object under ``prefix``; how many there were."""
    removed = 0
    with translated(prefix, s3):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket,
                                                              Prefix=prefix.key)
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=prefix.bucket, Delete={"Objects": keys, "Quiet": True})
                removed += len(keys)
    return removed


def list_prefixes(s3: Any, prefix: S3Uri) -> list[str]:
    """The "folders" directly under ``prefix`` (their names, without the prefix)."""
    found = []
    with translated(prefix, s3):
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=prefix.bucket, Prefix=prefix.key, Delimiter="/")
        for page in pages:
            for entry in page.get("CommonPrefixes", []):
                found.append(entry["Prefix"][len(prefix.key):].rstrip("/"))
    return found


def multipart_uploads(s3: Any, prefix: S3Uri) -> list[tuple[str, str]]:
    """(key, upload id) of the unfinished multipart uploads under ``prefix``."""
    found: list[tuple[str, str]] = []
    with translated(prefix, s3):
        pages = s3.get_paginator("list_multipart_uploads").paginate(
            Bucket=prefix.bucket, Prefix=prefix.key)
        for page in pages:
            found.extend((u["Key"], u["UploadId"]) for u in page.get("Uploads", []))
    return found


def abort_upload(s3: Any, bucket: str, key: str, upload_id: str) -> None:
    with translated(f"s3://{bucket}/{key}", s3):
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


def presigned_get(s3: Any, uri: S3Uri, seconds: int) -> str:
    """A URL that reads the object for ``seconds`` without credentials (the client
    signs it locally: no request is made), answered with the object's content type."""
    return str(s3.generate_presigned_url(
        "get_object", ExpiresIn=seconds,
        Params={"Bucket": uri.bucket, "Key": uri.key,
                "ResponseContentType": content_type(uri.key)}))


@dataclass(frozen=True)
class ListedObject:
    key: str
    size: int
    etag: str  # without quotes
    modified_ns: int  # LastModified, in nanoseconds since the epoch


def list_objects(s3: Any, prefix: S3Uri, *, recursive: bool = True) -> Iterator[ListedObject]:
    """Every object under ``prefix`` (only those directly under it unless ``recursive``),
    a page of up to 1,000 at a time; errors as one line naming the prefix."""
    extra = {} if recursive else {"Delimiter": "/"}
    with translated(prefix, s3):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket,
                                                              Prefix=prefix.key, **extra)
        for page in pages:
            for entry in page.get("Contents", []):
                modified = entry["LastModified"]
                yield ListedObject(str(entry["Key"]), int(entry["Size"]),
                                   str(entry["ETag"]).strip('"'),
                                   int(modified.timestamp()) * 1_000_000_000
                                   + modified.microsecond * 1000)


DELETE_BATCH = 1000
"""Keys per DeleteObjects request: the most S3 takes in one."""


def delete_keys(s3: Any, bucket: str, keys: Sequence[str]) -> int:
    """Delete ``keys`` of ``bucket``, 1,000 per DeleteObjects request; how many. A key the
    store refused to delete (the request itself succeeds) is an error naming that key."""
    removed = 0
    for start in range(0, len(keys), DELETE_BATCH):
        chunk = keys[start:start + DELETE_BATCH]
        with translated(f"s3://{bucket}/{chunk[0]}", s3):
            answer = s3.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": key} for key in chunk], "Quiet": True})
        errors = answer.get("Errors") or []
        if errors:
            first = errors[0]
            where = f"s3://{bucket}/{first.get('Key', '')}"
            code = str(first.get("Code", ""))
            if code in _DENIED:
                raise PermanentError(f"{where}: access denied ({code})")
            raise TransientError(f"{where}: not deleted ({code or 'error'})")
        removed += len(chunk)
    return removed


def sha256_checksum(s3: Any, uri: S3Uri) -> str | None:
    """The object's SHA-256 (hex) when the store keeps one for its whole content (it was
    uploaded with ``ChecksumAlgorithm=SHA256`` in one part); None otherwise. A multipart
    upload's SHA-256 is a checksum of its parts' checksums (type COMPOSITE), not of the
    content, like its ETag; S3 has no whole-object SHA-256 for multipart uploads, and
    some stores (moto) return the composite value without its ``-<parts>`` suffix, so a
    multipart ETag rules the checksum out too."""
    with translated(uri, s3, missing=InputRefused):
        answer = s3.head_object(Bucket=uri.bucket, Key=uri.key, ChecksumMode="ENABLED")
    value = str(answer.get("ChecksumSHA256") or "")
    multipart = "-" in str(answer.get("ETag", "")) or "-" in value
    if not value or multipart or answer.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    try:
        digest = base64.b64decode(str(value), validate=True)
    except ValueError:
        return None
    return digest.hex() if len(digest) == 32 else None
