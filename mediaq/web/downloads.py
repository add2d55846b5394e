"""``GET /api/media/downloads/{key}/{path}``: a job's output through a signed link
(see ``mediaq.download_links``). No token: the link is the credential. Range requests,
the content type from the name, an ETag and Last-Modified come from Starlette's
FileResponse; the file is streamed from disk."""

from __future__ import annotations

import os
import time
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, Response

from mediaq import download_links
from mediaq.storage import s3 as s3ops
from mediaq.storage.setup import client_settings, presigner
from mediaq.web.auth import admit

PLAYLIST_MAX_BYTES = 8 * 1024 * 1024  # a long film's media playlist is a few hundred kB

router = APIRouter(prefix=download_links.PREFIX, tags=["downloads"])


@router.api_route("/{key_id}/{path:path}", methods=["GET", "HEAD"], response_class=FileResponse,
                  responses={200: {"description": "The file (206 for a range)",
                                   "content": {"application/octet-stream": {}}},
                             403: {"description": "Bad signature, expired, token revoked"},
                             404: {"description": "No such output, or the job was deleted"}})
def download(
    request: Request,
    key_id: Annotated[int, Path(ge=1, le=2**62)],
    path: Annotated[str, Path(max_length=4096)],
    expires: Annotated[int, Query(ge=0, le=2**40)],
    sig: Annotated[str, Query(min_length=1, max_length=100)],
) -> Response:
    """One output of a job, through a signed, expiring link from the job's ``outputs``
    (or a webhook's ``output_metadata``); ``Range`` requests are answered with 206."""
    admit(request, None)  # the client address's rate limit
    settings = request.app.state.settings
    root: FilePath = settings.storage.outputs
    if settings.storage.remote_output_root and download_links.is_hls_playlist(path):
        return _remote_playlist(request, key_id, path, expires, sig)
    try:
        with request.app.state.admit_pool.connection() as conn:
            target = download_links.resolve(conn, key_id, path, expires, sig, root)
    except download_links.LinkRefused as refused:
        raise HTTPException(refused.status, refused.message) from None
    left = max(0, int(expires - time.time()))
    cache = {"Cache-Control": f"private, max-age={left}"}
    answer = FileResponse(target, media_type=download_links.content_type(target),
                          filename=target.name, content_disposition_type="inline",
                          headers=cache, stat_result=os.stat(target))
    etag = answer.headers["etag"]
    wanted = [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]
    if etag in wanted or "*" in wanted:  # the client's copy is this one
        return Response(status_code=304, headers={"ETag": etag, **cache})
    return answer


def _remote_playlist(request: Request, key_id: int, path: str, expires: int,
                     sig: str) -> Response:
    """An HLS playlist kept in object storage, read from there and rewritten: each
    segment a presigned URL, each nested playlist this endpoint's own signed link (made
    with the same key, so revoking the token or deleting the job stops them too)."""
    settings = request.app.state.settings
    storage = settings.storage
    try:
        with request.app.state.admit_pool.connection() as conn:
            row = download_links.check(conn, key_id, path, expires, sig)
    except download_links.LinkRefused as refused:
        raise HTTPException(refused.status, refused.message) from None
    base = download_links.remote_root_of(storage.remote_output_root)
    assert base is not None
    signer = download_links.Signer(
        key_id, bytes(row["secret"]), int(row["job_id"]), str(row["job_code"]),
        storage.outputs.resolve(), (settings.web.public_url or str(request.base_url)).rstrip("/"),
        settings.web.link_ttl_seconds, presigner(storage), base)
    if signer.remote_relative(base + path) is None:
        raise HTTPException(404, f"{path}: no such output")
    s3 = s3ops.client(client_settings(storage))
    uri = download_links.remote_location(base, path)
    try:
        answer = s3.get_object(Bucket=uri.bucket, Key=uri.key)
        if int(answer.get("ContentLength", 0)) > PLAYLIST_MAX_BYTES:
            raise HTTPException(404, f"{path}: too large for a playlist")
        text = answer["Body"].read().decode("utf-8", errors="replace")
    except s3.exceptions.NoSuchKey:
        raise HTTPException(404, f"{path}: no such output") from None
    body = download_links.rewrite_hls(text, path, signer.object_url)
    left = max(0, int(expires - time.time()))
    return Response(body, media_type="application/vnd.apple.mpegurl",
                    headers={"Cache-Control": f"private, max-age={min(left, 60)}"})
