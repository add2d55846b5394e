"""``GET /api/media/downloads/{key}/{path}``: a job's output through a signed link
(see ``mediaq.download_links``). No token: the link is the credential. Range requests,
the content type from the name, an ETag and Last-Modified come from Starlette's
FileResponse; the file is streamed from disk."""

from __future__ import annotations

import os
import posixpath
import time
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from mediaq import download_links
from mediaq.storage import s3 as s3ops
from mediaq.storage.setup import client_settings, presigner
from mediaq.web.auth import admit

PLAYLIST_MAX_BYTES = 8 * 1024 * 1024  # a long film's media playlist is a few hundred kB

router = APIRouter(prefix=download_links.PREFIX, tags=["downloads"])


@router.api_route("/{key_id}/folder/{expires}/{sig}/{path:path}", methods=["GET", "HEAD"],
                  response_class=FileResponse,
                  responses={200: {"description": "The file (206 for a range)",
                                   "content": {"application/octet-stream": {}}},
                             307: {"description": "In object storage: its presigned URL"},
                             403: {"description": "Bad signature, expired, token revoked"},
                             404: {"description": "No such output, or the job was deleted"}})
def folder_download(
    request: Request,
    key_id: Annotated[int, Path(ge=1, le=2**62)],
    expires: Annotated[int, Path(ge=0, le=2**40)],
    sig: Annotated[str, Path(min_length=1, max_length=100)],
    path: Annotated[str, Path(max_length=4096)],
) -> Response:
    """A file of a job's output folder through a folder link (the BaseURL of a DASH MPD,
    whose segment templates name files no single link could sign): served from disk, or
    redirected to its presigned URL when the outputs are in object storage."""
    admit(request, None)
    settings = request.app.state.settings
    root: FilePath = settings.storage.outputs
    try:
        with request.app.state.admit_pool.connection() as conn:
            row = download_links.check_folder(conn, key_id, expires, sig, path)
    except download_links.LinkRefused as refused:
        raise HTTPException(refused.status, refused.message) from None
    if settings.storage.remote_output_root:
        url = _remote_signer(request, key_id, row).object_url(path)
        if url is None:
            raise HTTPException(404, f"{path}: no such output")
        return RedirectResponse(url, status_code=307,
                                headers={"Cache-Control": "private, max-age=60"})
    inside = download_links.relative_output(root / path, root, str(row["job_code"]))
    target = root.resolve() / inside if inside else None
    if target is None or inside != path or not target.is_file():
        raise HTTPException(404, f"{path}: no such output")
    return _file(request, target, expires)


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
    if settings.storage.remote_output_root and download_links.is_manifest(path):
        return _remote_manifest(request, key_id, path, expires, sig)
    try:
        with request.app.state.admit_pool.connection() as conn:
            target = download_links.resolve(conn, key_id, path, expires, sig, root)
    except download_links.LinkRefused as refused:
        raise HTTPException(refused.status, refused.message) from None
    return _file(request, target, expires)


def _file(request: Request, target: FilePath, expires: int) -> Response:
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


def _remote_signer(request: Request, key_id: int, row: dict[str, Any]
                   ) -> download_links.Signer:
    """The links of a key's job whose outputs are in object storage."""
    settings = request.app.state.settings
    storage = settings.storage
    base = download_links.remote_root_of(storage.remote_output_root)
    return download_links.Signer(
        key_id, bytes(row["secret"]), int(row["job_id"]), str(row["job_code"]),
        storage.outputs.resolve(), (settings.web.public_url or str(request.base_url)).rstrip("/"),
        settings.web.link_ttl_seconds, presigner(storage), base)


def _remote_manifest(request: Request, key_id: int, path: str, expires: int,
                     sig: str) -> Response:
    """An HLS playlist or DASH MPD kept in object storage, read from there and rewritten:
    in a playlist each segment becomes a presigned URL and each nested playlist this
    endpoint's own signed link; an MPD gets a folder link as its BaseURL. Links are made
    with the same key, so revoking the token or deleting the job stops them too."""
    storage = request.app.state.settings.storage
    try:
        with request.app.state.admit_pool.connection() as conn:
            row = download_links.check(conn, key_id, path, expires, sig)
    except download_links.LinkRefused as refused:
        raise HTTPException(refused.status, refused.message) from None
    signer = _remote_signer(request, key_id, row)
    base = signer.remote_root
    if base is None or signer.remote_relative(base + path) is None:
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
    left = max(0, int(expires - time.time()))
    cache = {"Cache-Control": f"private, max-age={min(left, 60)}"}
    if download_links.is_hls_playlist(path):
        return Response(download_links.rewrite_hls(text, path, signer.object_url),
                        media_type="application/vnd.apple.mpegurl", headers=cache)
    try:
        body = download_links.rewrite_mpd(text, signer.folder_link(posixpath.dirname(path)))
    except ValueError as exc:
        raise HTTPException(404, f"{path}: {exc}") from None
    return Response(body, media_type="application/dash+xml", headers=cache)
