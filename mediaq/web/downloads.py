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
from mediaq.web.auth import admit

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
