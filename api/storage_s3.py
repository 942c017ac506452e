"""`S3ArtifactStore`: the artifact store in an S3-compatible bucket (AWS S3, MinIO, R2, GCS).

Keys under `s3://BUCKET/PREFIX/` mirror the local layout: `{id}.png|svg|mp4`,
`{id}-{k}.png|svg` (picture k of a batch of variations), `previews/{id}.png`,
`uploads/{id}/{name}` and `.text2art/{marker}`. The local directory (the node's T2A_OUTPUT_DIR)
only stages files: the engine writes the video and the outputs there, they are uploaded, then
removed; `path` downloads a copy for e-mail attachments.

An object appears whole or not at all (a PUT, or a multipart upload that boto3 aborts when it
fails), so a reader never sees part of one; when any upload of a result fails, the objects
already written for it are deleted and `StorageError` says why. boto3 reads credentials and
the region from the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, profiles, instance roles).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import format_datetime
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from api.errors import one_line
from api.storage import (
    MEDIA_TYPES,
    OUTPUT_KEYS,
    ArtifactStore,
    StorageError,
    output_file,
    output_name,
    valid_name,
)
from engine import Result
from engine.output import save_outputs

CHUNK = 256 * 1024  # bytes per piece of a streamed object


@dataclass
class ObjectStream:
    """An object (or the requested range of it) to stream: status, headers and the bytes."""

    status: int
    headers: dict[str, str]
    chunks: Iterator[bytes] = field(default_factory=lambda: iter(()))


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

    remote = True

    def __init__(self, url: str, staging: Path, client: Any, presign_seconds: int | None = None):
        super().__init__(staging)
        self.url = url.rstrip("/")
        self.bucket, self.prefix = parse_s3_url(url)
        self.client = client
        self.presign_seconds = presign_seconds  # None: stream through the API

    def describe(self) -> str:
        """The bucket URL and, when not AWS's, the endpoint."""
        endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", "")
        return f"{self.url} (endpoint {endpoint})" if endpoint else self.url

    def key(self, name: str) -> str:
        """The object key of `name` under the prefix."""
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
        except self.client.exceptions.NoSuchKey:
            return None
        return bytes(obj["Body"].read())

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
        self.put_bytes(f".text2art/{name}", data, "application/octet-stream")

    def read_marker(self, name: str) -> bytes | None:
        """The marker's bytes, or None."""
        return self.get_bytes(f".text2art/{name}")

    def delete_marker(self, name: str) -> None:
        """Remove the marker."""
        self.remove([f".text2art/{name}"])

    # -- results -----------------------------------------------------------------------------
    def save_result(self, result: Result, job_id: str) -> list[str]:
        """Write the outputs in the staging directory, upload each, then drop the local files;
        when an upload fails, delete what was uploaded and raise `StorageError`."""
        shown = self.public_settings(result.settings)
        done: list[str] = []
        try:
            files = save_outputs(result, self._staging(job_id), job_id, settings=shown)
            for key, path in files.items():
                name = output_file(job_id, key)
                self.put_file(name, Path(path), MEDIA_TYPES[output_name(job_id, key)[1]])
                done.append(key)
        except Exception as exc:
            self._forget([output_file(job_id, key) for key in done])
            detail = f"cannot save the result in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail) from exc
        finally:
            self._drop_local(job_id)
        return [key for key in OUTPUT_KEYS if key in done]

    def video_path(self, job_id: str) -> Path:
        """Where the engine writes the MP4 before it is uploaded (the folder is made here)."""
        folder = self._staging(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{job_id}.mp4"

    def path(self, name: str, ext: str) -> Path | None:
        """A local copy of the kept object (downloaded atomically), or None (`name`: a job id,
        or `{id}-{k}` for picture k of its variations)."""
        if not valid_name(name, ext):
            return None
        data = self.get_bytes(f"{name}.{ext}")
        if data is None:
            return None
        path = self.root / "cache" / f"{name}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.part")
        part.write_bytes(data)
        part.replace(path)
        return path

    def read(self, name: str, ext: str) -> bytes | None:
        """The kept object's bytes, or None."""
        return self.get_bytes(f"{name}.{ext}") if valid_name(name, ext) else None

    def kept(self, job_id: str) -> list[str]:
        """The output keys of the results kept for the job."""
        return [key for key in OUTPUT_KEYS if self.exists(output_file(job_id, key))]

    def local_files(self, job_id: str, keys: list[str]) -> dict[str, Path]:
        """Local copies of the given results (e-mail attachments), by output key."""
        files = {key: self.path(*output_name(job_id, key)) for key in keys if key in OUTPUT_KEYS}
        return {key: path for key, path in files.items() if path is not None}

    # -- serving -----------------------------------------------------------------------------
    def presigned_url(self, name: str, ext: str) -> str | None:
        """A time-limited GET URL of the object; None when presigning is off or it is missing."""
        if self.presign_seconds is None or not self.exists(f"{name}.{ext}"):
            return None
        params = {"Bucket": self.bucket, "Key": self.key(f"{name}.{ext}")}
        params["ResponseContentType"] = MEDIA_TYPES[ext]
        params["ResponseContentDisposition"] = f'inline; filename="{name}.{ext}"'
        url: str = self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=self.presign_seconds
        )
        return url

    def open_stream(self, name: str, ext: str, byte_range: str | None) -> ObjectStream | None:
        """The object, or the single range asked for (206; 416 when outside it); None: no such
        object. S3 itself applies the Range header."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(f"{name}.{ext}")}
        if byte_range:
            args["Range"] = byte_range
        try:
            obj = self.client.get_object(**args)
        except Exception as exc:
            if _status(exc) == 404:
                return None
            if _status(exc) == 416:
                size = self._size(name, ext)
                return ObjectStream(416, {"Content-Range": f"bytes */{size}"})
            raise StorageError(f"cannot read {name}.{ext}: {one_line(exc)}") from exc
        headers = {"Content-Length": str(obj["ContentLength"]), "Accept-Ranges": "bytes"}
        if obj.get("ETag"):
            headers["ETag"] = obj["ETag"]
        if obj.get("LastModified"):
            modified = obj["LastModified"].astimezone(timezone.utc)
            headers["Last-Modified"] = format_datetime(modified, usegmt=True)
        if obj.get("ContentRange"):
            headers["Content-Range"] = obj["ContentRange"]
        status = 206 if obj.get("ContentRange") else 200
        return ObjectStream(status, headers, obj["Body"].iter_chunks(CHUNK))

    def _size(self, name: str, ext: str) -> int:
        head = self.client.head_object(Bucket=self.bucket, Key=self.key(f"{name}.{ext}"))
        return int(head["ContentLength"])

    # -- previews ----------------------------------------------------------------------------
    def save_preview(self, job_id: str, image: Image.Image) -> None:
        """Replace the job's preview object."""
        buffer = BytesIO()
        image.save(buffer, format="PNG")
        try:
            self.put_bytes(f"previews/{job_id}.png", buffer.getvalue(), "image/png")
        except Exception as exc:
            detail = f"cannot save the preview in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail) from exc

    def read_preview(self, job_id: str) -> bytes | None:
        """The latest preview's bytes, or None."""
        return self.get_bytes(f"previews/{job_id}.png")

    def remove_preview(self, job_id: str) -> None:
        """Drop the preview."""
        self.remove([f"previews/{job_id}.png"])

    # -- uploads -----------------------------------------------------------------------------
    def commit_uploads(self, job_id: str) -> None:
        """Upload the job's images from the local upload folder to `uploads/{id}/`."""
        folder = self.upload_dir(job_id)
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        try:
            for path in files:
                self.put_file(f"uploads/{job_id}/{path.name}", path, "application/octet-stream")
        except Exception as exc:
            detail = f"cannot store the uploaded images in {self.describe()}: {one_line(exc)}"
            raise StorageError(detail) from exc

    def localize(self, settings: Any, job_id: str) -> Any:
        """Download the job's uploads into this node's upload folder; paths point there."""
        folder = self.upload_dir(job_id)
        try:
            names = self.list_names(f"uploads/{job_id}") if _has_uploads(settings) else []
            for name in names:
                data = self.get_bytes(name)
                if data is not None:
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / Path(name).name).write_bytes(data)
        except Exception as exc:
            detail = f"cannot read the uploaded images from {self.describe()}: {one_line(exc)}"
            raise StorageError(detail) from exc
        return super().localize(settings, job_id)

    # -- deletion ----------------------------------------------------------------------------
    def delete(self, job_id: str) -> None:
        """Remove every object of the job (results, preview, uploads) and its local files."""
        self.discard(job_id)
        self.remove(self.list_names(f"uploads/{job_id}"))
        shutil.rmtree(self.upload_dir(job_id), ignore_errors=True)

    def discard(self, job_id: str) -> None:
        """Remove the results and preview of a failed or cancelled run (uploads stay)."""
        names = [output_file(job_id, key) for key in OUTPUT_KEYS]
        self.remove([*names, f"previews/{job_id}.png"])
        self._drop_local(job_id)
        for name in names:
            (self.root / "cache" / name).unlink(missing_ok=True)

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


def _has_uploads(settings: Any) -> bool:
    return bool(settings.image_prompts or settings.init_image)


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
