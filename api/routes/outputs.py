"""Kept results: `OUTPUT_DIR/{id}.png|.mp4|.svg`, served at `GET /outputs/{id}.{ext}`.

Ids are random (uuid4), so an output URL is only known to whoever made the image; outputs need
no API key, which lets a browser show them in an `<img>`.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from engine import Result, Settings
from engine.output import save_png

MEDIA_TYPES = {"png": "image/png", "mp4": "video/mp4", "svg": "image/svg+xml"}
_JOB_ID = re.compile(r"[0-9a-f]{32}")

router = APIRouter(tags=["outputs"])


def new_job_id() -> str:
    """A fresh random id for one generation."""
    return uuid.uuid4().hex


def output_path(output_dir: Path, job_id: str, ext: str) -> Path:
    """Where the result of `job_id` with extension `ext` is kept."""
    return output_dir / f"{job_id}.{ext}"


def upload_dir(output_dir: Path, job_id: str) -> Path:
    """Where the images uploaded with `job_id` are kept."""
    return output_dir / "uploads" / job_id


def public_settings(settings: Settings, output_dir: Path) -> Settings:
    """The settings with upload paths relative to the output directory (no server paths)."""

    def rel(path: str) -> str:
        try:
            return str(Path(path).relative_to(output_dir))
        except ValueError:
            return Path(path).name

    update: dict[str, Any] = {"image_prompts": [rel(p) for p in settings.image_prompts]}
    if settings.init_image:
        update["init_image"] = rel(settings.init_image)
    return settings.model_copy(update=update)


def save_result(result: Result, output_dir: Path, job_id: str) -> dict[str, Path]:
    """Write the PNG (with its metadata) and the SVG; returns every kept file by extension."""
    output_dir.mkdir(parents=True, exist_ok=True)
    png = output_path(output_dir, job_id, "png")
    partial = png.with_name(f".{job_id}.png.part")  # renamed when complete: never served half
    save_png(result.image, public_settings(result.settings, output_dir), partial)
    os.replace(partial, png)
    files = {"png": png}
    if result.svg is not None:
        files["svg"] = output_path(output_dir, job_id, "svg")
        files["svg"].write_text(result.svg, encoding="utf-8")
    if result.video_path is not None and result.video_path.exists():
        files["mp4"] = result.video_path
    return files


def output_urls(request: Request, job_id: str, exts: list[str]) -> dict[str, str]:
    """Absolute URL of each kept file, by extension."""
    return {ext: str(request.url_for("output", job_id=job_id, ext=ext)) for ext in exts}


@router.get(
    "/outputs/{job_id}.{ext}",
    name="output",
    response_class=FileResponse,
    responses={
        200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "The file."},
        404: {"description": "No such output."},
    },
)
def get_output(job_id: str, ext: str, request: Request) -> FileResponse:
    """A kept result: the PNG, the MP4 (make_video) or the SVG (painting)."""
    if not _JOB_ID.fullmatch(job_id) or ext not in MEDIA_TYPES:
        raise HTTPException(404, "no such output; ids look like 32 hex digits, types png|mp4|svg")
    path = output_path(request.app.state.config.output_dir, job_id, ext)
    if not path.is_file():
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
