"""Uploads over HTTP at ``/api/media/uploads``: the tus 1.0.0 resumable protocol (core,
creation, termination, expiration) and plain ``multipart/form-data`` posts for small
files. Bytes are streamed to a part file on disk as they arrive (never held whole in
memory); a finished upload is sniffed, landed under an input root and, when its
metadata names a ``workflow``, submitted (see ``mediaq.upload_files``).

A PATCH claims its upload in the database for as long as it writes (two writers at
once would interleave bytes), and records what is durably on disk when it ends,
however it ends: a client whose connection was cut asks HEAD for the offset and goes
on from there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from mediaq import db, rate_limits, upload_files
from mediaq.web import multipart_stream, serialise
from mediaq.web.auth import Principal, require

router = APIRouter(prefix="/api/media/uploads", tags=["uploads"])
Submitter = Annotated[Principal, Depends(require("submitter"))]
Creator = Annotated[Principal, Depends(require("submitter", kind="submit"))]
UploadId = Annotated[str, PathParam(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination,expiration"
OFFSET_STREAM = "application/offset+octet-stream"
HOLD_SECONDS = 120          # a PATCH's claim; renewed while bytes keep coming
WRITE_BUFFER = 1 << 20      # bytes gathered before one write() in a worker thread
HEAD_WAIT_SECONDS = 3.0     # a HEAD right after a cut waits for that PATCH to record


def _tus(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, **(extra or {})}


def _refuse(status: int, message: str, **headers: str) -> HTTPException:
    return HTTPException(status, message, headers=_tus(headers))


def _settings(request: Request) -> Any:
    return request.app.state.settings


def _input_root(request: Request) -> Path:
    root: Path = _settings(request).storage.effective_input_roots[0]
    return root


def _max_size(request: Request, who: Principal) -> int | None:
    sizes = rate_limits.parse_role_sizes(_settings(request).web.upload_max_size)
    return sizes.get(who.role)


def _ttl_s(request: Request) -> float:
    return float(_settings(request).web.upload_expiry_hours) * 3600


def _expires(row: dict[str, Any]) -> str:
    return email.utils.format_datetime(row["expires_at"].astimezone(dt.UTC), usegmt=True)


def _location(request: Request, upload_id: str) -> str:
    base = _settings(request).web.public_url or str(request.base_url)
    return f"{base.rstrip('/')}{router.prefix}/{upload_id}"


def _by(who: Principal) -> str:
    return f"upload:{who.name or who.token_id}"


async def _db(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    return await run_in_threadpool(fn, request.app.state.pool, *args)


def _one(pool: Any, name: str, params: dict[str, Any]) -> db.Row | None:
    with db.transaction(pool) as conn:
        return db.fetch_one(conn, name, params)


def _content_length(request: Request) -> int | None:
    """The body's declared length. Read from the request, not declared as an API
    parameter: it is the transport's header (a client that set it apart from its body
    would desynchronise its own connection), so the OpenAPI document does not offer it
    to clients or fuzzers as something to choose."""
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def _own(row: db.Row | None, who: Principal, upload_id: str) -> db.Row:
    """The upload if this token made it (an admin sees all); else 404, never 403, so
    ids cannot be probed."""
    if row is None or (row["token_id"] != who.token_id and who.role != "admin"):
        raise _refuse(404, f"upload {upload_id} does not exist")
    return row


# -- discovery ------------------------------------------------------------------------


@router.options("", status_code=204, response_class=Response)
def tus_options(request: Request) -> Response:
    """tus discovery: the version, extensions and largest size this server takes."""
    largest = [s for s in rate_limits.parse_role_sizes(
        _settings(request).web.upload_max_size).values() if s]
    headers = _tus({"Tus-Version": TUS_VERSION, "Tus-Extension": TUS_EXTENSIONS})
    if largest:
        headers["Tus-Max-Size"] = str(max(largest))
    return Response(status_code=204, headers=headers)


# -- creation -------------------------------------------------------------------------

CREATE_DOC = {
    "requestBody": {"required": False, "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "workflow": {"type": "string", "description": "Submit it to this workflow"},
                "priority": {"type": "integer", "minimum": 1, "maximum": 10},
                "params": {"type": "string", "description": "JSON: step → parameters"}}}}}},
}


@router.post("", status_code=201, openapi_extra=CREATE_DOC, responses={
    201: {"description": "tus: an empty answer with Location (the upload's URL) and "
                         "Upload-Expires. multipart: the landed upload as JSON."},
    413: {"description": "Larger than this token's role may upload"},
    415: {"description": "Not a media file or document"}})
async def create_upload(
    request: Request, who: Creator,
    tus_resumable: Annotated[str | None, Header(max_length=20)] = None,
    upload_length: Annotated[int | None, Header(ge=0, le=2**62)] = None,
    upload_metadata: Annotated[str | None, Header(max_length=20_000)] = None,
) -> Response:
    """Start a tus upload (``Tus-Resumable: 1.0.0``, ``Upload-Length``, and
    ``Upload-Metadata`` with ``filename`` and optionally ``workflow``, ``priority``,
    ``params``), or upload a small file in one ``multipart/form-data`` post (fields
    ``file``, ``workflow``, ``priority``, ``params``). Either way a finished upload
    whose metadata names a workflow becomes a job."""
    limit = _max_size(request, who)
    content_length = _content_length(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        if limit is not None and content_length is not None \
                and content_length > limit + multipart_stream.OVERHEAD:
            raise _refuse(413, f"upload too large: at most {limit} bytes for the {who.role} role")
        return await _multipart(request, who, limit)
    if tus_resumable is None:
        raise _refuse(415, "send a tus creation request (Tus-Resumable: 1.0.0) or "
                           "multipart/form-data")
    if tus_resumable != TUS_VERSION:
        raise _refuse(412, f"Tus-Resumable {tus_resumable!r} is not supported",
                      **{"Tus-Version": TUS_VERSION})
    if upload_length is None:
        raise _refuse(400, "Upload-Length is required (deferred lengths are not supported)")
    if limit is not None and upload_length > limit:
        raise _refuse(413, f"upload too large: {upload_length} bytes, at most {limit} for "
                           f"the {who.role} role")
    want = upload_files.intent(upload_files.parse_tus_metadata(upload_metadata))
    row = await _db(request, _create, who, want, upload_length, _input_root(request),
                    _ttl_s(request))
    headers = {"Location": _location(request, row["id"]), "Upload-Expires": _expires(row)}
    if upload_length == 0:  # nothing to PATCH: finished at once
        await _finish(request, row, who, headers)
    return Response(status_code=201, headers=_tus(headers))


def _create(pool: Any, who: Principal, want: upload_files.Intent, length: int,
            root: Path, ttl_s: float, received: int = 0,
            upload_id: str | None = None) -> db.Row:
    return upload_files.create(pool, token_id=who.token_id, want=want, length=length,
                               root=root, ttl_s=ttl_s, received=received,
                               upload_id=upload_id)


async def _finish(request: Request, row: db.Row, who: Principal,
                  headers: dict[str, str]) -> upload_files.Landed:
    try:
        landed: upload_files.Landed = await run_in_threadpool(
            upload_files.land, request.app.state.pool, row, _input_root(request), _by(who))
    except upload_files.NotMedia as exc:
        raise _refuse(415, exc.message) from None
    if landed.job:
        headers["Mediaq-Job"] = str(landed.job["job_code"])
    return landed


# -- tus: offset, append, terminate --------------------------------------------------------


@router.head("/{upload_id}", status_code=200, response_class=Response)
async def upload_offset(upload_id: UploadId, request: Request, who: Submitter) -> Response:
    """tus: how many bytes of the upload the server has (``Upload-Offset``)."""
    row = _own(await _db(request, _one, "upload_get", {"id": upload_id}), who, upload_id)
    deadline = time.monotonic() + HEAD_WAIT_SECONDS
    while row["busy_until"] is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # a PATCH cut a moment ago is still recording its offset
        row = _own(await _db(request, _one, "upload_get", {"id": upload_id}), who, upload_id)
    headers = {"Upload-Offset": str(row["received"]), "Upload-Length": str(row["length"]),
               "Cache-Control": "no-store"}
    if row["status"] == "receiving":
        headers["Upload-Expires"] = _expires(row)
    echoed = upload_files.tus_metadata_header(row["metadata"] or {})
    if echoed:
        headers["Upload-Metadata"] = echoed
    return Response(status_code=200, headers=_tus(headers))


@router.patch("/{upload_id}", status_code=204, response_class=Response, openapi_extra={
    "requestBody": {"required": True, "content": {
        OFFSET_STREAM: {"schema": {"type": "string", "format": "binary"}},
        # The same bytes under the common name, for generic HTTP clients and tools.
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_append(
    upload_id: UploadId, request: Request, who: Submitter,
    upload_offset: Annotated[int, Header(ge=0, le=2**62)],
    tus_resumable: Annotated[str, Header(max_length=20)],
) -> Response:
    """tus: append the body at ``Upload-Offset``; answers the new offset. The last
    bytes finish the upload (``Mediaq-Job``: the job it became)."""
    if tus_resumable != TUS_VERSION:
        raise _refuse(412, f"Tus-Resumable {tus_resumable!r} is not supported",
                      **{"Tus-Version": TUS_VERSION})
    if request.headers.get("content-type", "").split(";")[0].strip() not in (
            OFFSET_STREAM, "application/octet-stream"):
        raise _refuse(415, f"Content-Type must be {OFFSET_STREAM}")
    row = _own(await _db(request, _one, "upload_get", {"id": upload_id}), who, upload_id)
    if row["status"] == "complete":
        if upload_offset == row["length"]:
            return Response(status_code=204, headers=_tus({"Upload-Offset": str(row["length"])}))
        raise _refuse(409, f"upload {upload_id} is already complete")
    content_length = _content_length(request)
    if content_length is not None and upload_offset + content_length > row["length"]:
        raise _refuse(413, f"{upload_offset} + {content_length} bytes is past the upload's "
                           f"length of {row['length']}")
    claimed = await _db(request, _one, "upload_claim",
                        {"id": upload_id, "offset": upload_offset, "hold_s": HOLD_SECONDS})
    if claimed is None:
        if upload_offset != row["received"]:
            raise _refuse(409, f"Upload-Offset {upload_offset} does not match the "
                               f"{row['received']} bytes received")
        raise _refuse(409, f"another request is writing upload {upload_id}")
    received, overflow = await _receive(request, claimed)
    # A body longer than the upload is refused whole: none of its bytes count.
    released = await _db(request, _one, "upload_release", {
        "id": upload_id, "received": upload_offset if overflow else received,
        "ttl_s": _ttl_s(request)})
    if overflow:
        raise _refuse(413, f"more bytes than the upload's length of {row['length']}")
    assert released is not None
    headers = {"Upload-Offset": str(received), "Upload-Expires": _expires(released)}
    if received == released["length"]:
        await _finish(request, released, who, headers)
    return Response(status_code=204, headers=_tus(headers))


async def _receive(request: Request, row: db.Row) -> tuple[int, bool]:
    """Stream the body into the part file from the claimed offset; the bytes durably on
    disk at the end (however the body ended) and whether it ran past the length."""
    start = offset = int(row["received"])
    length = int(row["length"])
    handle = await run_in_threadpool(_open_at, Path(row["part_path"]), offset)
    pending, overflow, held = bytearray(), False, time.monotonic()
    try:
        async for chunk in request.stream():
            room = length - offset - len(pending)
            if len(chunk) > room:
                chunk, overflow = chunk[:room], True
            pending += chunk
            if len(pending) >= WRITE_BUFFER:
                offset += await run_in_threadpool(handle.write, bytes(pending))
                pending.clear()
            if time.monotonic() - held > HOLD_SECONDS / 3:
                held = time.monotonic()
                await _db(request, _one_exec, "upload_hold",
                          {"id": row["id"], "hold_s": HOLD_SECONDS})
            if overflow:
                break
    except ClientDisconnect:
        pass  # what arrived is kept: the client resumes from it
    finally:
        if pending and not overflow:
            offset += await run_in_threadpool(handle.write, bytes(pending))
        if overflow:  # refused whole: back to where this PATCH began
            await run_in_threadpool(handle.truncate, start)
        await run_in_threadpool(_sync_close, handle)
    return offset, overflow


def _one_exec(pool: Any, name: str, params: dict[str, Any]) -> None:
    with db.transaction(pool) as conn:
        db.execute(conn, name, params)


def _open_at(path: Path, offset: int) -> Any:
    handle = path.open("r+b")
    handle.truncate(offset)  # bytes past the recorded offset (a crash mid-write) go
    handle.seek(offset)
    return handle


def _sync_close(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())  # the offset recorded next must be on disk
    handle.close()


@router.delete("/{upload_id}", status_code=204, response_class=Response)
async def upload_terminate(upload_id: UploadId, request: Request, who: Submitter) -> Response:
    """tus termination: forget an upload and its bytes (a finished upload's landed file
    stays: it is a job's input)."""
    _own(await _db(request, _one, "upload_get", {"id": upload_id}), who, upload_id)
    gone = await _db(request, _one, "upload_delete", {"id": upload_id})
    if gone is None:
        raise _refuse(409, f"another request is writing upload {upload_id}")
    if gone["status"] == "receiving":
        upload_files.remove(gone["part_path"])
    return Response(status_code=204, headers=_tus())


@router.get("/{upload_id}")
async def show_upload(upload_id: UploadId, request: Request, who: Submitter) -> JSONResponse:
    """An upload as JSON: its bytes so far, where it landed and the job it became."""
    row = _own(await _db(request, _one, "upload_get", {"id": upload_id}), who, upload_id)
    return JSONResponse(shown(row))


def shown(row: db.Row) -> dict[str, Any]:
    meta = row.get("metadata") or {}
    return serialise.record({
        "id": row["id"], "filename": row["filename"], "length": row["length"],
        "offset": row["received"], "status": row["status"],
        "contentType": row.get("content_type"), "path": row.get("landed_path"),
        "workflow": meta.get("workflow"), "jobId": row.get("job_code"),
        "error": row.get("error"), "createdAt": row["created_at"],
        "expiresAt": row["expires_at"] if row["status"] == "receiving" else None})


# -- multipart --------------------------------------------------------------------------


async def _multipart(request: Request, who: Principal, limit: int | None) -> Response:
    upload_id = upload_files.new_upload_id()
    part = upload_files.part_path(_input_root(request), upload_id)
    try:
        form = await multipart_stream.receive(request, part, limit)
    except multipart_stream.TooLarge:
        upload_files.remove(part)
        raise _refuse(413, f"upload too large: at most {limit} bytes for the {who.role} "
                           "role") from None
    except (multipart_stream.BadForm, ClientDisconnect) as exc:
        upload_files.remove(part)
        raise _refuse(400, f"bad multipart form: {exc}") from None
    try:
        want = upload_files.intent({"filename": form.filename, **form.fields})
        row = await _db(request, _create, who, want, form.size, _input_root(request),
                        _ttl_s(request), form.size, upload_id)
    except Exception:
        upload_files.remove(part)
        raise
    headers: dict[str, str] = {"Location": _location(request, upload_id)}
    await _finish(request, row, who, headers)
    final = await _db(request, _one, "upload_get", {"id": upload_id})
    return JSONResponse(shown(final), status_code=201, headers=headers)
