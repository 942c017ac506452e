"""`S3ArtifactStore`: the artifact store in an S3-compatible bucket (AWS S3, MinIO, R2, GCS).

Each object's key is `PREFIX/` + `artifact_name(...)`, the layout every store shares. The local
directory (the node's T2A_OUTPUT_DIR) only stages files: the engine writes the video and the
outputs under `staging/{id}/`, they are uploaded, then removed; uploads wait in
`uploads/{id}/` until `commit_uploads` (API node) or after `localize` (worker); `path`
downloads a copy into `cache/` (e-mail attachments, /generate's PNG).

An object appears whole or not at all (a PUT, or a multipart upload that boto3 aborts when it
fails), so a reader never sees part of one; when any upload of a result fails, the objects
already written for it are deleted and `StorageError` says why. GET /outputs streams the object
(S3 applies the Range header itself) or, with T2A_S3_PRESIGN, redirects to a presigned URL.
boto3 reads credentials and the region from the standard AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, profiles, instance roles).
"""

from __future__ import annotations

import contextlib
import shutil
from datetime import timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from api.errors import StorageError, unreachable
from api.storage import (
    MEDIA_TYPES,
    OUTPUT_KEYS,
    ArtifactStore,
    S,
    Served,
    ServedRedirect,
    ServedStream,
    artifact_name,
    png_bytes,
    step_key,
    step_keys,
    uploads_in,
    uploads_relative,
    valid_name,
)
from engine import Result, Settings, atomic_write_bytes, save_outputs
from engine.errors import one_line

CHUNK = 256 * 1024  # bytes per piece of a streamed object


def parse_s3_url(url: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix'); ValueError naming the format."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"T2A_STORAGE_URL: expected s3://BUCKET[/PREFIX], got {url!r}")
    return parts.netloc, parts.path.strip("/")


def make_client(endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 S3 client; path-style addressing for a custom endpoint (MinIO, moto)."""
    import boto3
    from botocore.config import Config

    style = "path" if endpoint_url else "auto"
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": style},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


class S3ArtifactStore(ArtifactStore):
    """Results, previews and uploads in a bucket; `root` is the local staging directory."""

    def __init__(self, url: str, staging: Path, client: Any, presign_seconds: int | None = None):
        self.root = staging
        self.url = url.rstrip("/")
        self.bucket, self.prefix = parse_s3_url(url)
        self.client = client
        self.presign_seconds = presign_seconds  # None: stream through the API

    def prepare(self) -> None:
        """Create the staging directory (`check` says whether the bucket can be used)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        """The bucket URL and, when not AWS's, the endpoint."""
        endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", "")
        return f"{self.url} (endpoint {endpoint})" if endpoint else self.url

    def key(self, name: str) -> str:
        """The object key of an artifact (`name`: from `artifact_name`) under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name

    # -- objects -----------------------------------------------------------------------------
    def put_bytes(self, name: str, data: bytes, content_type: str) -> None:
        """Write one object (whole or not at all)."""
        self.client.put_object(
            Bucket=self.bucket, Key=self.key(name), Body=data, ContentType=content_type
        )

    def put_file(self, name: str, path: Path, content_type: str) -> None:
        """Upload a local file (multipart when large; a failed upload is aborted)."""
        extra = {"ContentType": content_type}
        self.client.upload_file(str(path), self.bucket, self.key(name), ExtraArgs=extra)

    def get_bytes(self, name: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
            return bytes(obj["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as exc:
            detail = f"cannot read {name} from {self.describe()}: {one_line(exc)}"
            raise StorageError(detail, unreachable(exc)) from exc

    def exists(self, name: str) -> bool:
        """Whether the object exists."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    def remove(self, names: list[str]) -> None:
        """Delete objects (no error for missing ones)."""
        for name in names:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def list_names(self, folder: str) -> list[str]:
        """Names (relative to the prefix) of the objects under `folder/`."""
        start = self.key(folder.rstrip("/") + "/")
        cut = len(self.key(""))
        paginator = self.client.get_paginator("list_objects_v2")
        names = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            names += [item["Key"][cut:] for item in page.get("Contents", [])]
        return names

    # -- markers -----------------------------------------------------------------------------
    def write_marker(self, name: str, data: bytes) -> None:
        """Write `.text2art/{name}`."""
        self.put_bytes(artifact_name("marker", name), data, "application/octet-stream")

    def read_marker(self, name: str) -> bytes | None:
        """The marker's bytes, or None."""
        return self.get_bytes(artifact_name("marker", name))

    def delete_marker(self, name: str) -> None:
        """Remove the marker."""
        self.remove([artifact_name("marker", name)])

    # -- results -----------------------------------------------------------------------------
    def save_result(self, result: Result, job_id: str) -> list[str]:
        """Write the outputs in the staging directory, upload each, then drop the local files;
        when an upload fails, delete what was uploaded and raise `StorageError`."""
        shown = self.public_settings(result.settings)
        done: list[str] = []
        try:
            files = save_outputs(result, self._staging(job_id), job_id, settings=shown)
            for key, path in files.items():
                media_type = MEDIA_TYPES[key.rpartition(".")[2]]
                self.put_file(artifact_name("result", job_id, key), Path(path), media_type)
                done.append(key)
        except Exception as exc:
            self._forget([artifact_name("result", job_id, key) for key in done])
            detail = f"cannot save the result in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail, unreachable(exc)) from exc
        finally:
            self._drop_local(job_id)
        return [key for key in OUTPUT_KEYS if key in done]

    def video_path(self, job_id: str) -> Path:
        """Where the engine writes the MP4 before it is uploaded (the folder is made here)."""
        folder = self._staging(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / artifact_name("result", job_id, "mp4")

    def path(self, name: str, ext: str) -> Path | None:
        """A local copy of the kept object (downloaded atomically), or None."""
        if not valid_name(name, ext):
            return None
        data = self.get_bytes(artifact_name("result", name, ext))
        if data is None:
            return None
        return atomic_write_bytes(self._cached(artifact_name("result", name, ext)), data)

    def read(self, name: str, ext: str) -> bytes | None:
        """The kept object's bytes, or None."""
        if not valid_name(name, ext):
            return None
        return self.get_bytes(artifact_name("result", name, ext))

    def kept(self, job_id: str) -> list[str]:
        """The output keys of the results kept for the job."""
        return [key for key in OUTPUT_KEYS if self.exists(artifact_name("result", job_id, key))]

    # -- serving -----------------------------------------------------------------------------
    def serve(self, name: str, ext: str, byte_range: str | None) -> Served | None:
        """A redirect to a presigned URL (T2A_S3_PRESIGN), else the object or the range asked
        for, streamed; None when there is no such object."""
        if not valid_name(name, ext):
            return None
        if self.presign_seconds is not None:
            return self._presigned(name, ext)
        return self._stream(name, ext, byte_range)

    def _presigned(self, name: str, ext: str) -> ServedRedirect | None:
        """A time-limited GET URL of the object (which answers Range too), or None."""
        filename = artifact_name("result", name, ext)
        if not self.exists(filename):
            return None
        params = {"Bucket": self.bucket, "Key": self.key(filename)}
        params["ResponseContentType"] = MEDIA_TYPES[ext]
        params["ResponseContentDisposition"] = f'inline; filename="{filename}"'
        url: str = self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=self.presign_seconds
        )
        return ServedRedirect(url)

    def _stream(self, name: str, ext: str, byte_range: str | None) -> ServedStream | None:
        """The object, or the single range asked for (206; 416 when outside it); None: no such
        object. S3 itself applies the Range header."""
        filename = artifact_name("result", name, ext)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(filename)}
        if byte_range:
            args["Range"] = byte_range
        try:
            obj = self.client.get_object(**args)
        except Exception as exc:
            if _status(exc) == 404:
                return None
            if _status(exc) == 416:
                headers = {"Content-Range": f"bytes */{self._size(filename)}"}
                return ServedStream(416, MEDIA_TYPES[ext], filename, headers)
            detail = f"cannot read {filename}: {one_line(exc)}"
            raise StorageError(detail, unreachable(exc)) from exc
        status = 206 if obj.get("ContentRange") else 200
        chunks = obj["Body"].iter_chunks(CHUNK)
        return ServedStream(status, MEDIA_TYPES[ext], filename, _object_headers(obj), chunks)

    def _size(self, name: str) -> int:
        head = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        return int(head["ContentLength"])

    # -- previews ----------------------------------------------------------------------------
    def save_preview(self, job_id: str, image: Image.Image) -> None:
        """Replace the job's preview object."""
        try:
            self.put_bytes(artifact_name("preview", job_id), png_bytes(image), "image/png")
        except Exception as exc:
            detail = f"cannot save the preview in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail, unreachable(exc)) from exc

    def read_preview(self, job_id: str) -> bytes | None:
        """The latest preview's bytes, or None."""
        return self.get_bytes(artifact_name("preview", job_id))

    def remove_preview(self, job_id: str) -> None:
        """Drop the preview."""
        self.remove([artifact_name("preview", job_id)])

    # -- run states --------------------------------------------------------------------------
    def save_state(self, job_id: str, data: bytes) -> None:
        """Replace the job's run-state object (an object appears whole)."""
        try:
            self.put_bytes(artifact_name("state", job_id), data, "application/octet-stream")
        except Exception as exc:
            detail = f"cannot save the run state in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail, unreachable(exc)) from exc

    def read_state(self, job_id: str) -> bytes | None:
        """The job's run state, or None."""
        try:
            return self.get_bytes(artifact_name("state", job_id))
        except Exception as exc:
            detail = f"cannot read the run state in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail, unreachable(exc)) from exc

    def remove_state(self, job_id: str) -> None:
        """Drop the job's run-state object."""
        self.remove([artifact_name("state", job_id)])

    # -- uploads and settings ----------------------------------------------------------------
    def upload_dir(self, job_id: str) -> Path:
        """The local folder of the job's uploads (before `commit_uploads`, after `localize`)."""
        return self.root / artifact_name("uploads", job_id)

    def commit_uploads(self, job_id: str) -> None:
        """Upload the job's images from the local upload folder to `uploads/{id}/`."""
        folder = self.upload_dir(job_id)
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        try:
            for path in files:
                name = artifact_name("uploads", job_id, path.name)
                self.put_file(name, path, "application/octet-stream")
        except Exception as exc:
            detail = f"cannot store the uploaded images in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail, unreachable(exc)) from exc

    def localize(self, settings: S, job_id: str) -> S:
        """Download the job's uploads into this node's upload folder; paths point there."""
        folder = self.upload_dir(job_id)
        try:
            has_uploads = bool(settings.image_prompts or settings.init_image)
            names = self.list_names(artifact_name("uploads", job_id)) if has_uploads else []
            for name in names:
                data = self.get_bytes(name)
                if data is not None:
                    atomic_write_bytes(folder / Path(name).name, data)
        except Exception as exc:
            detail = f"cannot read the uploaded images from {self.describe()}: {one_line(exc)}"
            raise StorageError(detail, unreachable(exc)) from exc
        return uploads_in(settings, folder)

    def public_settings(self, settings: Settings) -> Settings:
        """The settings with upload paths relative to the staging directory (`uploads/...`)."""
        return uploads_relative(settings, self.root)

    # -- deletion ----------------------------------------------------------------------------
    def delete(self, job_id: str) -> None:
        """Remove every object of the job (results, preview, run state, uploads) and its local
        files."""
        self.discard(job_id)
        self.remove_state(job_id)
        self.remove(self.list_names(artifact_name("uploads", job_id)))
        self.remove(self.list_names(artifact_name("steps", job_id)))
        shutil.rmtree(self.upload_dir(job_id), ignore_errors=True)

    def save_step(self, job_id: str, iteration: int, image: Image.Image) -> str:
        """Put `steps/{id}/step-0010.png`; returns its key."""
        key = step_key(iteration)
        try:
            self.put_bytes(artifact_name("result", job_id, key), png_bytes(image), "image/png")
        except Exception as exc:
            detail = f"cannot save a step's picture in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail) from exc
        return key

    def steps(self, job_id: str) -> list[str]:
        """The keys of the objects under the job's `steps/{id}/`, in order."""
        return step_keys(self.list_names(artifact_name("steps", job_id)))

    def discard(self, job_id: str) -> None:
        """Remove the results and preview of a failed or cancelled run (uploads stay)."""
        names = [artifact_name("result", job_id, key) for key in OUTPUT_KEYS]
        self.remove([*names, artifact_name("preview", job_id)])
        self._drop_local(job_id)
        for name in names:
            self._cached(name).unlink(missing_ok=True)

    def _drop_local(self, job_id: str) -> None:
        """Remove the node's staged files of a job (the bucket keeps what matters)."""
        shutil.rmtree(self._staging(job_id), ignore_errors=True)
        shutil.rmtree(self.upload_dir(job_id), ignore_errors=True)

    def _forget(self, names: list[str]) -> None:
        """Best-effort removal after a failed save (the store may be the thing that failed)."""
        with contextlib.suppress(Exception):  # the error that matters is the one raised
            self.remove(names)

    def _staging(self, job_id: str) -> Path:
        return self.root / "staging" / job_id

    def _cached(self, name: str) -> Path:
        return self.root / "cache" / name


def _object_headers(obj: dict[str, Any]) -> dict[str, str]:
    """The headers that describe a GET's object: length, ranges, ETag, Last-Modified, range."""
    headers = {"Content-Length": str(obj["ContentLength"]), "Accept-Ranges": "bytes"}
    if obj.get("ETag"):
        headers["ETag"] = obj["ETag"]
    if obj.get("LastModified"):
        modified = obj["LastModified"].astimezone(timezone.utc)
        headers["Last-Modified"] = format_datetime(modified, usegmt=True)
    if obj.get("ContentRange"):
        headers["Content-Range"] = obj["ContentRange"]
    return headers


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore `ClientError` (None for other errors)."""
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(response.get("Error", {}).get("Code", ""))
    if code in ("NoSuchKey", "NotFound", "404"):
        return 404
    if code == "InvalidRange":
        return 416
    return int(status) if status else None
