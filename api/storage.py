"""`ArtifactStore`: every file a job leaves, and the only code that knows where they live.

Layout of the local store (the one backend today) under its root directory:

    {id}.png | {id}.svg | {id}.mp4     the kept results, served at GET /outputs/{id}.{ext}
    {id}-{k}.png | {id}-{k}.svg        picture k of a job with variations ({id}.png: their sheet)
    previews/{id}.png                  the latest preview of a running job
    uploads/{id}/                      the images uploaded with the job

Callers speak in job ids and extensions, or output keys ('png', '2.png': see `output_name`);
only `video_path`, `upload_dir` and `path` hand out a local path, because the engine reads and
writes local files and `FileResponse` serves them. The
S3-compatible backend (`api.storage_s3.S3ArtifactStore`, chosen by `api.artifacts`) keeps the
same methods: those three then stage files in its local directory, and `commit_uploads` /
`localize` carry a job's uploads from the API node to the worker through the bucket.
Ids are random (uuid4), so an output URL is only known to whoever made the image.

Writes are atomic (a hidden temporary name renamed into place; an S3 object appears whole), and
a failed write raises `StorageError`, a `RunFailed` with one line saying where and why.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from api.errors import RunFailed, one_line
from engine import Result, Settings
from engine.output import save_outputs
from engine.settings import MAX_VARIATIONS

log = logging.getLogger(__name__)

MEDIA_TYPES = {"png": "image/png", "mp4": "video/mp4", "svg": "image/svg+xml"}
EXTENSIONS = tuple(MEDIA_TYPES)
# Every output key a job may keep, in the order they are listed: the main files by extension,
# then picture k of a batch of variations as 'k.png' (and 'k.svg' for the painting style).
OUTPUT_KEYS = EXTENSIONS + tuple(
    f"{k}.{ext}" for k in range(1, MAX_VARIATIONS + 1) for ext in ("png", "svg")
)
_NAME = re.compile(rf"[0-9a-f]{{32}}(-[1-{MAX_VARIATIONS}])?")


def new_job_id() -> str:
    """A fresh random id for one generation."""
    return uuid.uuid4().hex


def valid_name(name: str, ext: str) -> bool:
    """Whether `{name}.{ext}` can name a kept result: a job id (32 hex digits), optionally
    '-k' for picture k of its variations, and a known extension."""
    return bool(_NAME.fullmatch(name)) and ext in MEDIA_TYPES


def output_name(job_id: str, key: str) -> tuple[str, str]:
    """The name and extension an output key is kept and served under:
    ('png' -> `{id}`, 'png'; '2.png' -> `{id}-2`, 'png')."""
    index, _, ext = key.rpartition(".")
    return (f"{job_id}-{index}" if index else job_id), ext


def output_file(job_id: str, key: str) -> str:
    """The file name of an output key, e.g. `{id}-2.png` (also its path under /outputs/)."""
    name, ext = output_name(job_id, key)
    return f"{name}.{ext}"


def variation_keys(keys: list[str], ext: str = "png") -> dict[int, str]:
    """Picture index -> its key, for the pictures of a batch among `keys` ('1.png', ...)."""
    found = {}
    for key in keys:
        index, _, kind = key.rpartition(".")
        if index.isdigit() and kind == ext:
            found[int(index)] = key
    return dict(sorted(found.items()))


class StorageError(RunFailed, OSError):
    """The artifact store cannot be written or read: the job fails, saying where and why."""

    def __init__(self, detail: str):
        super().__init__("storage_error", detail)


class ArtifactStore:
    """Results, previews and uploads of jobs in a local directory."""

    remote = False  # True: files live elsewhere; `path` makes a local copy

    def __init__(self, root: Path):
        self.root = root

    def prepare(self) -> None:
        """Create the directory (called once by the owner, never at import)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        """Where the artifacts are, for messages: the directory (or bucket URL)."""
        return f"the directory {self.root.resolve()}"

    def check(self) -> None:
        """Write, read back and remove a sentinel; `StorageError` when the store is unusable."""
        name, token = f"check-{secrets.token_hex(8)}", secrets.token_bytes(16)
        try:
            self.write_marker(name, token)
            back = self.read_marker(name)
            self.delete_marker(name)
        except Exception as exc:
            raise StorageError(f"cannot use {self.describe()}: {one_line(exc)}") from exc
        if back != token:
            raise StorageError(f"{self.describe()} did not return what was written to it")

    # -- markers: small files of the service itself (start-up checks) -------------------------
    def write_marker(self, name: str, data: bytes) -> None:
        """Write `.text2art/{name}` atomically."""
        path = self.root / ".text2art" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{name}.part")
        part.write_bytes(data)
        os.replace(part, path)

    def read_marker(self, name: str) -> bytes | None:
        """The marker's bytes, or None."""
        return _read(self.root / ".text2art" / name)

    def delete_marker(self, name: str) -> None:
        """Remove the marker (no error when it is gone)."""
        (self.root / ".text2art" / name).unlink(missing_ok=True)

    # -- results ---------------------------------------------------------------------------
    def save_result(self, result: Result, job_id: str) -> list[str]:
        """Write the PNG (its metadata without server paths), the SVG and each picture of a
        batch, each atomically; returns the kept output keys (the video is already in place)."""
        shown = self.public_settings(result.settings)
        try:
            kept = save_outputs(result, self.root, job_id, settings=shown)
            return [key for key in OUTPUT_KEYS if key in kept]
        except OSError as exc:  # the worker discards what the failed job wrote
            raise StorageError(
                f"cannot save the result in {self.describe()}: {one_line(exc)}"
            ) from exc

    def video_path(self, job_id: str) -> Path:
        """Where the engine writes the job's MP4."""
        return self._file(job_id, "mp4")

    def path(self, name: str, ext: str) -> Path | None:
        """The kept file to serve, or None when there is none (`name`: a job id, or
        `{id}-{k}` for picture k of its variations)."""
        if not valid_name(name, ext):
            return None
        path = self._file(name, ext)
        return path if path.is_file() else None

    def read(self, name: str, ext: str) -> bytes | None:
        """The kept file's bytes, or None."""
        path = self.path(name, ext)
        return _read(path) if path is not None else None

    def kept(self, job_id: str) -> list[str]:
        """The output keys of the results kept for the job."""
        return [key for key in OUTPUT_KEYS if self._file(*output_name(job_id, key)).is_file()]

    def presigned_url(self, name: str, ext: str) -> str | None:
        """A URL that serves the file without the API (None: the API serves it)."""
        return None

    def local_files(self, job_id: str, keys: list[str]) -> dict[str, Path]:
        """Local files of the given results (e-mail attachments), by output key."""
        return {key: self._file(*output_name(job_id, key)) for key in keys if key in OUTPUT_KEYS}

    # -- previews --------------------------------------------------------------------------
    def save_preview(self, job_id: str, image: Image.Image) -> None:
        """Replace the job's preview; a reader never sees half a file."""
        path = self._preview(job_id)
        part = path.with_name(f".{path.name}.part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(part, format="PNG")
            os.replace(part, path)
        except BaseException as exc:
            part.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                detail = f"cannot save the preview in {self.describe()}: {one_line(exc)}"
                raise StorageError(detail) from exc
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

    def commit_uploads(self, job_id: str) -> None:
        """Make the job's uploads visible to every worker (here: they already are)."""

    def localize(self, settings: Settings, job_id: str) -> Settings:
        """The settings with upload paths in this node's `upload_dir` (where it reads them)."""
        local = self.upload_dir(job_id)

        def here(path: str) -> str:
            return str(local / Path(path).name)

        update: dict[str, Any] = {"image_prompts": [here(p) for p in settings.image_prompts]}
        if settings.init_image:
            update["init_image"] = here(settings.init_image)
        return settings.model_copy(update=update)

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
        self.discard(job_id)
        shutil.rmtree(self.upload_dir(job_id), ignore_errors=True)

    def discard(self, job_id: str) -> None:
        """Remove what a failed or cancelled run wrote (results, preview); uploads stay."""
        for key in OUTPUT_KEYS:
            self._file(*output_name(job_id, key)).unlink(missing_ok=True)
        self.remove_preview(job_id)

    def _file(self, name: str, ext: str) -> Path:
        return self.root / f"{name}.{ext}"

    def _preview(self, job_id: str) -> Path:
        return self.root / "previews" / f"{job_id}.png"


def _read(path: Path) -> bytes | None:
    """The whole file, or None when it is gone (a preview is replaced and removed as it runs)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
