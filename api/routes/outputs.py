"""`GET /outputs/{id}.{ext}`: the kept results (PNG, MP4, SVG) of `POST /generate` and of jobs.

Outputs need no API key, which lets a browser show them in an `<img>`: their ids are random, so
an output URL is only known to whoever made the image.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from api.deps import ArtifactsDep
from api.storage import MEDIA_TYPES, valid_name

router = APIRouter(tags=["outputs"])


@router.get(
    "/outputs/{job_id}.{ext}",
    name="output",
    response_class=FileResponse,
    responses={
        200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "The file."},
        404: {"description": "No such output."},
    },
)
def get_output(job_id: str, ext: str, artifacts: ArtifactsDep) -> FileResponse:
    """A kept result: the PNG, the MP4 (make_video) or the SVG (painting)."""
    if not valid_name(job_id, ext):
        raise HTTPException(404, "no such output; ids look like 32 hex digits, types png|mp4|svg")
    path = artifacts.path(job_id, ext)
    if path is None:
        raise HTTPException(404, f"no output {job_id}.{ext}")
    headers = {"X-Content-Type-Options": "nosniff"}
    if ext == "svg":  # an SVG may carry scripts: never run them in our origin
        headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return FileResponse(
        path,
        media_type=MEDIA_TYPES[ext],
        headers=headers,
        filename=path.name,
        content_disposition_type="inline",
    )
