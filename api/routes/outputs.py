"""`GET /outputs/{id}.{ext}`: the kept results (PNG, MP4, SVG) of `POST /generate` and of jobs;
`/outputs/{id}-{k}.{ext}` is picture k of a batch of variations.

Outputs need no API key, which lets a browser show them in an `<img>`: their ids are random, so
an output URL is only known to whoever made the image.

A local store serves the file (with Range requests); a bucket either streams the object through
the API (S3 applies the Range header itself) or, with T2A_S3_PRESIGN, answers 302 to a
presigned URL, which supports Range too.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from api.deps import ArtifactsDep
from api.storage import MEDIA_TYPES, ArtifactStore, valid_name
from api.storage_s3 import S3ArtifactStore

router = APIRouter(tags=["outputs"])


@router.get(
    "/outputs/{job_id}.{ext}",
    name="output",
    response_class=FileResponse,
    responses={
        200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "The file."},
        206: {"description": "The byte range asked for (Range header)."},
        302: {"description": "The file at a presigned URL of the bucket (T2A_S3_PRESIGN)."},
        404: {"description": "No such output."},
    },
)
async def get_output(job_id: str, ext: str, request: Request, artifacts: ArtifactsDep) -> Response:
    """A kept result: the PNG, the MP4 (make_video) or the SVG (painting); `{id}-{k}.png`
    (and `.svg`) is picture k of a job with variations, `{id}.png` their contact sheet."""
    if not valid_name(job_id, ext):
        raise HTTPException(
            404,
            "no such output; names are 32 hex digits, or that and -1 to -4 for a picture of a "
            "batch of variations; types png|mp4|svg",
        )
    url = await run_in_threadpool(artifacts.presigned_url, job_id, ext)
    if url is not None:
        return RedirectResponse(url, status_code=302)
    if isinstance(artifacts, S3ArtifactStore):
        return await _stream(artifacts, job_id, ext, request.headers.get("range"))
    return _file(artifacts, job_id, ext)


def _headers(job_id: str, ext: str) -> dict[str, str]:
    headers = {"X-Content-Type-Options": "nosniff"}
    if ext == "svg":  # an SVG may carry scripts: never run them in our origin
        headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return headers


def _file(artifacts: ArtifactStore, job_id: str, ext: str) -> FileResponse:
    path = artifacts.path(job_id, ext)
    if path is None:
        raise HTTPException(404, f"no output {job_id}.{ext}")
    return FileResponse(
        path,
        media_type=MEDIA_TYPES[ext],
        headers=_headers(job_id, ext),
        filename=path.name,
        content_disposition_type="inline",
    )


async def _stream(
    artifacts: S3ArtifactStore, job_id: str, ext: str, byte_range: str | None
) -> Response:
    found = await run_in_threadpool(artifacts.open_stream, job_id, ext, byte_range)
    if found is None:
        raise HTTPException(404, f"no output {job_id}.{ext}")
    headers = {**_headers(job_id, ext), **found.headers}
    headers["Content-Disposition"] = f'inline; filename="{job_id}.{ext}"'
    if found.status == 416:
        return Response(status_code=416, headers=headers)
    return StreamingResponse(
        iterate_in_threadpool(found.chunks),
        status_code=found.status,
        media_type=MEDIA_TYPES[ext],
        headers=headers,
    )
