"""`LocalArtifactStore`: the artifact store in a local directory (T2A_OUTPUT_DIR, or the path
T2A_STORAGE_URL names), each file at `root / artifact_name(...)`.

Results are written by `engine.save_outputs`, previews and markers by `engine.atomic_write`: a
hidden temporary name published into place, so a reader never sees half a file. GET /outputs
sends the file itself (`ServedFile`; the web layer answers Range requests).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from api.errors import StorageError
from api.storage import (
    MEDIA_TYPES,
    OUTPUT_KEYS,
    ArtifactStore,
    S,
    Served,
    ServedFile,
    artifact_name,
    step_key,
    step_keys,
    uploads_in,
    uploads_relative,
    valid_name,
)
from engine import Result, Settings, atomic_write, atomic_write_bytes, save_outputs
from engine.errors import one_line


class LocalArtifactStore(ArtifactStore):
    """Results, previews and uploads of jobs in a local directory."""

    def __init__(self, root: Path):
        self.root = root

    def file(self, name: str) -> Path:
        """The local path of an artifact (`name`: from `artifact_name`)."""
        return self.root / name

    def prepare(self) -> None:
        """Create the directory."""
        self.root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        """The directory, resolved."""
        return f"the directory {self.root.resolve()}"

    # -- markers -----------------------------------------------------------------------------
    def write_marker(self, name: str, data: bytes) -> None:
        """Write `.text2art/{name}` atomically."""
        atomic_write_bytes(self.file(artifact_name("marker", name)), data)

    def read_marker(self, name: str) -> bytes | None:
        """The marker's bytes, or None."""
        return _read(self.file(artifact_name("marker", name)))

    def delete_marker(self, name: str) -> None:
        """Remove the marker (no error when it is gone)."""
        self.file(artifact_name("marker", name)).unlink(missing_ok=True)

    # -- results -----------------------------------------------------------------------------
    def save_result(self, result: Result, job_id: str) -> list[str]:
        """Write the PNG, the SVG and each picture of a batch, each atomically (the video is
        already in place); returns the kept output keys."""
        shown = self.public_settings(result.settings)
        try:
            kept = save_outputs(result, self.root, job_id, settings=shown)
            return [key for key in OUTPUT_KEYS if key in kept]
        except OSError as exc:  # the worker discards what the failed job wrote
            raise StorageError(
                f"cannot save the result in {self.describe()}: {one_line(exc)}"
            ) from exc

    def video_path(self, job_id: str) -> Path:
        """Where the engine writes the job's MP4: its place in the store."""
        return self._result(job_id, "mp4")

    def kept(self, job_id: str) -> list[str]:
        """The output keys of the results kept for the job."""
        return [key for key in OUTPUT_KEYS if self._result(job_id, key).is_file()]

    def path(self, name: str, ext: str) -> Path | None:
        """The kept file, or None when there is none."""
        if not valid_name(name, ext):
            return None
        path = self._result(name, ext)
        return path if path.is_file() else None

    def read(self, name: str, ext: str) -> bytes | None:
        """The kept file's bytes, or None."""
        path = self.path(name, ext)
        return _read(path) if path is not None else None

    def serve(self, name: str, ext: str, byte_range: str | None) -> Served | None:
        """The kept file itself (the web layer applies `byte_range`), or None."""
        path = self.path(name, ext)
        return ServedFile(path, MEDIA_TYPES[ext], path.name) if path is not None else None

    # -- previews ----------------------------------------------------------------------------
    def save_preview(self, job_id: str, image: Image.Image) -> None:
        """Replace the job's preview atomically."""
        try:
            atomic_write(self._preview(job_id), lambda part: image.save(part, format="PNG"))
        except OSError as exc:
            detail = f"cannot save the preview in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail) from exc

    def read_preview(self, job_id: str) -> bytes | None:
        """The latest preview's bytes, or None."""
        return _read(self._preview(job_id))

    def remove_preview(self, job_id: str) -> None:
        """Drop the preview."""
        self._preview(job_id).unlink(missing_ok=True)

    # -- run states --------------------------------------------------------------------------
    def save_state(self, job_id: str, data: bytes) -> None:
        """Replace the job's run state atomically."""
        try:
            atomic_write_bytes(self._state(job_id), data)
        except OSError as exc:
            detail = f"cannot save the run state in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail) from exc

    def read_state(self, job_id: str) -> bytes | None:
        """The job's run state, or None."""
        try:
            return _read(self._state(job_id))
        except OSError as exc:
            detail = f"cannot read the run state in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail) from exc

    def remove_state(self, job_id: str) -> None:
        """Drop the job's run state."""
        self._state(job_id).unlink(missing_ok=True)

    # -- uploads and settings ----------------------------------------------------------------
    def upload_dir(self, job_id: str) -> Path:
        """The job's upload folder in the store."""
        return self.file(artifact_name("uploads", job_id))

    def commit_uploads(self, job_id: str) -> None:
        """Nothing to do: every node of this store sees the folder already."""

    def localize(self, settings: S, job_id: str) -> S:
        """The settings with upload paths in the job's upload folder."""
        return uploads_in(settings, self.upload_dir(job_id))

    def public_settings(self, settings: Settings) -> Settings:
        """The settings with upload paths relative to the directory."""
        return uploads_relative(settings, self.root)

    # -- deletion ----------------------------------------------------------------------------
    def save_step(self, job_id: str, iteration: int, image: Image.Image) -> str:
        """Write `steps/{id}/step-0010.png` atomically; returns its key."""
        key = step_key(iteration)
        try:
            atomic_write(self._result(job_id, key), lambda part: image.save(part, format="PNG"))
        except OSError as exc:
            detail = f"cannot save a step's picture in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail) from exc
        return key

    def steps(self, job_id: str) -> list[str]:
        """The keys of the files in the job's `steps/{id}` folder, in order."""
        folder = self.file(artifact_name("steps", job_id))
        return step_keys([p.name for p in folder.iterdir()] if folder.is_dir() else [])

    def delete(self, job_id: str) -> None:
        """Remove the job's results, intermediate pictures, preview, run state and uploads."""
        self.discard(job_id)
        self.remove_state(job_id)
        shutil.rmtree(self.upload_dir(job_id), ignore_errors=True)
        shutil.rmtree(self.file(artifact_name("steps", job_id)), ignore_errors=True)

    def discard(self, job_id: str) -> None:
        """Remove the results and preview of a failed or cancelled run."""
        for key in OUTPUT_KEYS:
            self._result(job_id, key).unlink(missing_ok=True)
        self.remove_preview(job_id)

    def _result(self, stem: str, key: str) -> Path:
        return self.file(artifact_name("result", stem, key))

    def _preview(self, job_id: str) -> Path:
        return self.file(artifact_name("preview", job_id))

    def _state(self, job_id: str) -> Path:
        return self.file(artifact_name("state", job_id))


def _read(path: Path) -> bytes | None:
    """The whole file, or None when it is gone (a preview is replaced and removed as it runs)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
