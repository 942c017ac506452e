"""`GET /outputs/{id}.{ext}`: the kept results (PNG, MP4, SVG) of `POST /generate` and of jobs;
`/outputs/{id}-{k}.{ext}` is picture k of a batch of variations.

Outputs need no API key, which lets a browser show them in an `<img>`: their ids are random, so
an output URL is only known to whoever made the image.

The store says how to answer (`ArtifactStore.serve` -> a `Served`): a local file (Range requests
answered here), a stream of bytes kept elsewhere with the store's status and headers (a bucket
applies the Range header itself), or a 302 to a presigned URL (T2A_S3_PRESIGN). `to_response`
turns each into the HTTP answer, adding the headers every output carries; this route never asks
which backend it holds.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from api.deps import ArtifactsDep
from api.storage import MEDIA_TYPES, OUTPUTS_PATH, Served, ServedFile, ServedRedirect, valid_name

router = APIRouter(tags=["outputs"])


@router.get(
    OUTPUTS_PATH + "/{job_id}.{ext}",
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
    served = await run_in_threadpool(artifacts.serve, job_id, ext, request.headers.get("range"))
    if served is None:
        raise HTTPException(404, f"no output {job_id}.{ext}")
    return to_response(served, ext)


def to_response(served: Served, ext: str) -> Response:
    """The HTTP answer for what the store serves (a redirect carries no headers of ours)."""
    if isinstance(served, ServedRedirect):
        return RedirectResponse(served.url, status_code=302)
    headers = _headers(ext)
    if isinstance(served, ServedFile):  # FileResponse answers Range and sets the disposition
        return FileResponse(
            served.path,
            media_type=served.media_type,
            headers=headers,
            filename=served.filename,
            content_disposition_type="inline",
        )
    headers.update(served.headers)
    headers["Content-Disposition"] = f'inline; filename="{served.filename}"'
    if served.chunks is None:
        return Response(status_code=served.status, headers=headers)
    return StreamingResponse(
        iterate_in_threadpool(served.chunks),
        status_code=served.status,
        media_type=served.media_type,
        headers=headers,
    )


def _headers(ext: str) -> dict[str, str]:
    headers = {"X-Content-Type-Options": "nosniff"}
    if ext == "svg":  # an SVG may carry scripts: never run them in our origin
        headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return headers
