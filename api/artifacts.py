"""`open_artifact_store(config)`: the `ArtifactStore` that T2A_STORAGE_URL names.

A directory (the default: T2A_OUTPUT_DIR) gives the local store (`LocalArtifactStore`);
`s3://BUCKET/PREFIX` the S3-compatible one (`S3ArtifactStore`), with T2A_S3_ENDPOINT_URL,
T2A_S3_REGION, T2A_S3_PRESIGN and the AWS credential variables. The only module of `api` that
names a backend: everything else holds an `ArtifactStore`.
"""

from __future__ import annotations

from pathlib import Path

from api.config import ApiConfig
from api.storage import ArtifactStore
from api.storage_local import LocalArtifactStore
from api.storage_s3 import S3ArtifactStore, make_client


def open_artifact_store(config: ApiConfig) -> ArtifactStore:
    """The store for `config` (not yet prepared; the caller calls `prepare()` and `check()`)."""
    url = config.storage_url
    if not url:
        return LocalArtifactStore(config.output_dir)
    if url.startswith("s3://"):
        try:
            client = make_client(config.s3_endpoint_url, config.s3_region)
        except ImportError as exc:
            raise RuntimeError(
                "T2A_STORAGE_URL is an s3:// URL but boto3 is not installed: "
                "pip install 'text2art[s3]'"
            ) from exc
        presign = config.s3_presign_expiry if config.s3_presign else None
        return S3ArtifactStore(url, config.output_dir, client, presign)
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"T2A_STORAGE_URL: expected a directory or s3://BUCKET/PREFIX: {url!r}")
    return LocalArtifactStore(Path(url.removeprefix("file://")))
