"""`ArtifactStore`: the interface of the store of every file a job leaves, and its naming rule.

Every backend lays its artifacts out the same way, as `artifact_name` names them (a local path
under the store's directory, or an S3 key under the bucket's prefix):

    {id}.png | {id}.svg | {id}.mp4     the kept results, served at GET /outputs/{id}.{ext}
    {id}-{k}.png | {id}-{k}.svg        picture k of a job with variations ({id}.png: their sheet)
    steps/{id}/step-{n}.png            the picture after iteration n of a job with save_every,
                                       served at GET /outputs/{id}-step-{n}.png
    previews/{id}.png                  the latest preview of a running job
    states/{id}.safetensors            the saved state of an unfinished job (`engine.RunState`)
    uploads/{id}/{file}                the images uploaded with the job
    .text2art/{marker}                 the service's own small files (start-up checks)

The backends are siblings that implement every operation: `api.storage_local.LocalArtifactStore`
(a directory) and `api.storage_s3.S3ArtifactStore` (an S3-compatible bucket);
`api.artifacts.open_artifact_store` picks one. Callers hold an `ArtifactStore` and never ask
which: they speak in job ids and output keys ('png', '2.png'). `video_path`, `upload_dir`, `path`
and `local_files` hand out local paths because the engine reads and writes local files (a bucket
stages them in a local folder); `serve` says how to answer GET /outputs as a `Served`, which the
route turns into a response. Ids are random (uuid4), so an output URL is only known to whoever
made the image.

Writes are atomic (a hidden temporary name published into place by the engine's
`atomic_write`; an S3 object appears whole), and a failed write raises `api.errors.StorageError`
with one line saying where and why.
"""

from __future__ import annotations

import abc
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Literal, TypeVar

from PIL import Image

from api.errors import StorageError, unreachable
from engine import (
    MAX_VARIATIONS,
    Result,
    Settings,
    image_prompt_entry,
    output_filename,
    parse_image_prompt,
)
from engine.errors import one_line

MEDIA_TYPES = {"png": "image/png", "mp4": "video/mp4", "svg": "image/svg+xml"}
EXTENSIONS = tuple(MEDIA_TYPES)
# Every output key a job may keep, in the order they are listed: the main files by extension,
# then picture k of a batch of variations as 'k.png' (and 'k.svg' for the painting style).
OUTPUT_KEYS = EXTENSIONS + tuple(
    f"{k}.{ext}" for k in range(1, MAX_VARIATIONS + 1) for ext in ("png", "svg")
)
OUTPUTS_PATH = "/outputs"  # GET {OUTPUTS_PATH}/{a result's name} serves it
_NAME = re.compile(rf"[0-9a-f]{{32}}(-[1-{MAX_VARIATIONS}]|-step-\d{{4,5}})?")
# An intermediate picture (`save_every`) as a result's file name: the job id and its key.
_STEP_FILE = re.compile(r"(?P<id>[0-9a-f]{32})-(?P<key>step-\d{4,5}\.png)")
STEP_KEY = re.compile(r"step-\d{4,5}\.png")

ArtifactKind = Literal["result", "preview", "state", "uploads", "marker", "steps"]
S = TypeVar("S", bound=Settings)  # settings keep their kind (resolved ones stay resolved)


def new_job_id() -> str:
    """A fresh random id for one generation."""
    return uuid.uuid4().hex


def valid_name(name: str, ext: str) -> bool:
    """Whether `{name}.{ext}` can name a kept result: a job id (32 hex digits), optionally
    '-k' for picture k of its variations, and a known extension."""
    return bool(_NAME.fullmatch(name)) and ext in MEDIA_TYPES


def artifact_name(kind: ArtifactKind, owner: str, item: str = "") -> str:
    """Where an artifact lives relative to the store, the same in every backend:

    - ('result', stem, key): `engine.output_filename`, 'png' -> `{stem}.png`, '2.png' ->
      `{stem}-2.png` (so a served name and extension, ('{id}-2', 'png'), name the same file);
    - ('preview', id): `previews/{id}.png`;
    - ('state', id): `states/{id}.safetensors`, the state a stopped run of the job continues from;
    - ('uploads', id) the job's upload folder `uploads/{id}`; ('uploads', id, file) one upload;
    - ('marker', name): `.text2art/{name}`;
    - ('steps', id): the folder of the job's intermediate pictures, `steps/{id}`; a result
      whose key is 'step-0010.png' lives there (`steps/{id}/step-0010.png`).
    """
    if kind == "result":
        name = output_filename(owner, item)
        step = _STEP_FILE.fullmatch(name)  # an intermediate picture lives in its job's folder
        return f"steps/{step['id']}/{step['key']}" if step else name
    if kind == "steps":
        return f"steps/{owner}"
    if kind == "preview":
        return f"previews/{owner}.png"
    if kind == "state":
        return f"states/{owner}.safetensors"
    if kind == "uploads":
        return f"uploads/{owner}/{item}" if item else f"uploads/{owner}"
    if kind == "marker":
        return f".text2art/{owner}"
    raise ValueError(
        f"unknown artifact kind {kind!r}; choose result, preview, state, uploads, marker or steps"
    )


def step_key(iteration: int) -> str:
    """The output key of the picture after `iteration` (`save_every`): 'step-0010.png'."""
    return f"step-{iteration:04d}.png"


def step_keys(names: list[str]) -> list[str]:
    """The intermediate pictures' keys among file or object names (a folder's), in order."""
    keys = [name.rpartition("/")[2] for name in names]
    return sorted(key for key in keys if STEP_KEY.fullmatch(key))


def png_bytes(image: Image.Image) -> bytes:
    """The image as a PNG file's bytes."""
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def output_url(base: str, job_id: str, key: str) -> str:
    """The URL of a kept result under `base` (the service's URL, no trailing slash), e.g.
    `{base}/outputs/{id}-2.png`: the job's links and /generate's headers both use it."""
    return f"{base}{OUTPUTS_PATH}/{output_filename(job_id, key)}"  # the served name


def variation_keys(keys: list[str], ext: str = "png") -> dict[int, str]:
    """Picture index -> its key, for the pictures of a batch among `keys` ('1.png', ...)."""
    found = {}
    for key in keys:
        index, _, kind = key.rpartition(".")
        if index.isdigit() and kind == ext:
            found[int(index)] = key
    return dict(sorted(found.items()))


def uploads_in(settings: S, folder: Path) -> S:
    """The settings with each upload path pointing into `folder` (where a node reads them)."""
    return _move_uploads(settings, lambda path: str(folder / Path(path).name))


def uploads_relative(settings: Settings, root: Path) -> Settings:
    """The settings with upload paths relative to `root` (outside it: the file name alone), so
    no server path is shown or written into a PNG."""

    def relative(path: str) -> str:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            return Path(path).name

    return _move_uploads(settings, relative)


def _move_uploads(settings: S, move: Callable[[str], str]) -> S:
    prompts = [parse_image_prompt(entry) for entry in settings.image_prompts]
    moved = [image_prompt_entry(move(p.text), p.weight, p.stop) for p in prompts]
    update: dict[str, Any] = {"image_prompts": moved}
    if settings.init_image:
        update["init_image"] = move(settings.init_image)
    return settings.model_copy(update=update)


# -- what GET /outputs answers (the route turns it into a response; no web types here) ---------
@dataclass(frozen=True)
class ServedFile:
    """A local file to send whole; the web layer answers a Range request on it itself."""

    path: Path
    media_type: str
    filename: str  # shown inline under this name


@dataclass(frozen=True)
class ServedStream:
    """Bytes kept elsewhere: the whole object (200) or the range asked for (206; 416 with no
    body when it lies outside), the headers that describe them, and the chunks."""

    status: int
    media_type: str
    filename: str  # shown inline under this name
    headers: dict[str, str]  # Content-Length, Content-Range, ETag, Last-Modified, ...
    chunks: Iterator[bytes] | None = None  # None: no body


@dataclass(frozen=True)
class ServedRedirect:
    """The file is at another URL (a presigned one) that answers Range requests too."""

    url: str


Served = ServedFile | ServedStream | ServedRedirect


class ArtifactStore(abc.ABC):
    """Results, previews, uploads and markers of jobs; each backend implements every operation."""

    @abc.abstractmethod
    def prepare(self) -> None:
        """Create what the store needs locally (called once by the owner, never at import)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the artifacts are, for messages: the directory or the bucket URL."""

    def check(self) -> None:
        """Write, read back and remove a sentinel; `StorageError` when the store is unusable."""
        name, token = f"check-{secrets.token_hex(8)}", secrets.token_bytes(16)
        try:
            self.write_marker(name, token)
            back = self.read_marker(name)
            self.delete_marker(name)
        except Exception as exc:
            detail = f"cannot use {self.describe()}: {one_line(exc)}"
            raise StorageError(detail, unreachable(exc)) from exc
        if back != token:
            raise StorageError(f"{self.describe()} did not return what was written to it")

    # -- markers: small files of the service itself (start-up checks) -------------------------
    @abc.abstractmethod
    def write_marker(self, name: str, data: bytes) -> None:
        """Write `.text2art/{name}` whole."""

    @abc.abstractmethod
    def read_marker(self, name: str) -> bytes | None:
        """The marker's bytes, or None."""

    @abc.abstractmethod
    def delete_marker(self, name: str) -> None:
        """Remove the marker (no error when it is gone)."""

    # -- results ---------------------------------------------------------------------------
    @abc.abstractmethod
    def save_result(self, result: Result, job_id: str) -> list[str]:
        """Keep the PNG (its metadata without server paths), the SVG, each picture of a batch
        and the video; returns the kept output keys. `StorageError` when a write fails (what
        was written of it is removed)."""

    @abc.abstractmethod
    def video_path(self, job_id: str) -> Path:
        """The local file the engine writes the job's MP4 to (`save_result` keeps it)."""

    @abc.abstractmethod
    def kept(self, job_id: str) -> list[str]:
        """The output keys of the results kept for the job."""

    @abc.abstractmethod
    def path(self, name: str, ext: str) -> Path | None:
        """A local file of the kept result (a bucket downloads a copy), or None when there is
        none (`name`: a job id, or `{id}-{k}` for picture k of its variations)."""

    @abc.abstractmethod
    def read(self, name: str, ext: str) -> bytes | None:
        """The kept result's bytes, or None."""

    @abc.abstractmethod
    def serve(self, name: str, ext: str, byte_range: str | None) -> Served | None:
        """How to answer GET /outputs/{name}.{ext} (with the request's Range header, if any);
        None when there is no such result."""

    def local_files(self, job_id: str, keys: list[str]) -> dict[str, Path]:
        """Local files of the given results (e-mail attachments), by output key; missing ones
        are left out."""
        files = {key: self.path(*_name_and_ext(job_id, key)) for key in keys if key in OUTPUT_KEYS}
        return {key: path for key, path in files.items() if path is not None}

    # -- previews --------------------------------------------------------------------------
    @abc.abstractmethod
    def save_preview(self, job_id: str, image: Image.Image) -> None:
        """Replace the job's preview; a reader never sees half of one."""

    @abc.abstractmethod
    def read_preview(self, job_id: str) -> bytes | None:
        """The latest preview's bytes, or None."""

    @abc.abstractmethod
    def remove_preview(self, job_id: str) -> None:
        """Drop the preview (the final image replaces it)."""

    # -- run states ------------------------------------------------------------------------
    @abc.abstractmethod
    def save_state(self, job_id: str, data: bytes) -> None:
        """Replace the job's saved run state (whole or not at all); `StorageError` on failure."""

    @abc.abstractmethod
    def read_state(self, job_id: str) -> bytes | None:
        """The job's saved run state, or None; `StorageError` when the store cannot be read."""

    @abc.abstractmethod
    def remove_state(self, job_id: str) -> None:
        """Drop the job's saved run state (the job ended; no error when there is none)."""

    # -- uploads and settings --------------------------------------------------------------
    @abc.abstractmethod
    def upload_dir(self, job_id: str) -> Path:
        """The local folder the images uploaded with the job are written to and read from."""

    @abc.abstractmethod
    def commit_uploads(self, job_id: str) -> None:
        """Make the job's uploads (in `upload_dir`) visible to every worker."""

    @abc.abstractmethod
    def localize(self, settings: S, job_id: str) -> S:
        """The settings with upload paths in this node's `upload_dir`, the files there."""

    @abc.abstractmethod
    def public_settings(self, settings: Settings) -> Settings:
        """The settings with upload paths relative to the store (no server paths)."""

    # -- deletion --------------------------------------------------------------------------
    @abc.abstractmethod
    def delete(self, job_id: str) -> None:
        """Remove every file of the job: results, intermediate pictures, preview, run state and
        uploads."""

    @abc.abstractmethod
    def save_step(self, job_id: str, iteration: int, image: Image.Image) -> str:
        """Keep the picture after `iteration` of a job with `save_every` (atomically); returns
        its output key (`step_key`)."""

    @abc.abstractmethod
    def steps(self, job_id: str) -> list[str]:
        """The output keys of the job's kept intermediate pictures, in order."""

    @abc.abstractmethod
    def discard(self, job_id: str) -> None:
        """Remove what a failed, cancelled or handed-back run wrote (results, preview); uploads,
        intermediate pictures (a run that continues keeps those it made before) and the run
        state stay (the worker removes the state when the job ends)."""


def _name_and_ext(job_id: str, key: str) -> tuple[str, str]:
    """The served name and extension of an output key: '2.png' -> (`{id}-2`, 'png')."""
    name, _, ext = output_filename(job_id, key).rpartition(".")
    return name, ext
