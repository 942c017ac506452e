"""`ArtifactStore`: every file a job leaves, and the only code that knows where they live.

Layout of the local store (the one backend today) under its root directory:

    {id}.png | {id}.svg | {id}.mp4     the kept results, served at GET /outputs/{id}.{ext}
    previews/{id}.png                  the latest preview of a running job
    uploads/{id}/                      the images uploaded with the job

Callers speak in job ids and extensions; only `video_path`, `upload_dir` and `path` hand out a
local path, because the engine reads and writes local files and `FileResponse` serves them. An
S3-compatible backend keeps the same methods (those three then stage files locally).
Ids are random (uuid4), so an output URL is only known to whoever made the image.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from engine import Result, Settings
from engine.output import save_outputs

MEDIA_TYPES = {"png": "image/png", "mp4": "video/mp4", "svg": "image/svg+xml"}
EXTENSIONS = tuple(MEDIA_TYPES)
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def new_job_id() -> str:
    """A fresh random id for one generation."""
    return uuid.uuid4().hex


def valid_name(job_id: str, ext: str) -> bool:
    """Whether `{job_id}.{ext}` can name a kept result (32 hex digits, a known extension)."""
    return bool(_JOB_ID.fullmatch(job_id)) and ext in MEDIA_TYPES


class ArtifactStore:
    """Results, previews and uploads of jobs in a local directory."""

    def __init__(self, root: Path):
        self.root = root

    def prepare(self) -> None:
        """Create the directory (called once by the owner, never at import)."""
        self.root.mkdir(parents=True, exist_ok=True)

    # -- results ---------------------------------------------------------------------------
    def save_result(self, result: Result, job_id: str) -> list[str]:
        """Write the PNG (its metadata without server paths) and the SVG, each atomically;
        returns the kept extensions (the video is already in place)."""
        shown = self.public_settings(result.settings)
        return list(save_outputs(result, self.root, job_id, settings=shown))

    def video_path(self, job_id: str) -> Path:
        """Where the engine writes the job's MP4."""
        return self._file(job_id, "mp4")

    def path(self, job_id: str, ext: str) -> Path | None:
        """The kept file to serve, or None when there is none."""
        if not valid_name(job_id, ext):
            return None
        path = self._file(job_id, ext)
        return path if path.is_file() else None

    def read(self, job_id: str, ext: str) -> bytes | None:
        """The kept file's bytes, or None."""
        path = self.path(job_id, ext)
        return _read(path) if path is not None else None

    def extensions(self, job_id: str) -> list[str]:
        """The extensions of the results kept for the job."""
        return [ext for ext in EXTENSIONS if self._file(job_id, ext).is_file()]

    def local_files(self, job_id: str, exts: list[str]) -> dict[str, Path]:
        """Local files of the given results (e-mail attachments), by extension."""
        return {ext: self._file(job_id, ext) for ext in exts if ext in MEDIA_TYPES}

    # -- previews --------------------------------------------------------------------------
    def save_preview(self, job_id: str, image: Image.Image) -> None:
        """Replace the job's preview; a reader never sees half a file."""
        path = self._preview(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.part")
        try:
            image.save(part, format="PNG")
            os.replace(part, path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    def read_preview(self, job_id: str) -> bytes | None:
        """The latest preview's bytes, or None."""
        return _read(self._preview(job_id))

    def remove_preview(self, job_id: str) -> None:
        """Drop the preview (the final image replaces it)."""
        self._preview(job_id).unlink(missing_ok=True)

    # -- uploads and settings --------------------------------------------------------------
    def upload_dir(self, job_id: str) -> Path:
        """Where the images uploaded with the job are kept."""
        return self.root / "uploads" / job_id

    def public_settings(self, settings: Settings) -> Settings:
        """The settings with upload paths relative to the store (no server paths)."""

        def rel(path: str) -> str:
            try:
                return str(Path(path).relative_to(self.root))
            except ValueError:
                return Path(path).name

        update: dict[str, Any] = {"image_prompts": [rel(p) for p in settings.image_prompts]}
        if settings.init_image:
            update["init_image"] = rel(settings.init_image)
        return settings.model_copy(update=update)

    # -- deletion --------------------------------------------------------------------------
    def delete(self, job_id: str) -> None:
        """Remove every file of the job: results, preview and uploads."""
        for ext in EXTENSIONS:
            self._file(job_id, ext).unlink(missing_ok=True)
        self.remove_preview(job_id)
        shutil.rmtree(self.upload_dir(job_id), ignore_errors=True)

    def _file(self, job_id: str, ext: str) -> Path:
        return self.root / f"{job_id}.{ext}"

    def _preview(self, job_id: str) -> Path:
        return self.root / "previews" / f"{job_id}.png"


def _read(path: Path) -> bytes | None:
    """The whole file, or None when it is gone (a preview is replaced and removed as it runs)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
