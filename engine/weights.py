"""The cache directory, checked and resumable downloads, and the bundled assets' paths.

Which files a model needs is the catalog's business (engine.catalog); this module fetches them.

Cache directory: `$TEXT2ART_CACHE` if set, else `$XDG_CACHE_HOME/text2art`, else
`~/.cache/text2art`. Files live at `<cache>/clip/<file>` and `<cache>/vqgan/<file>`; a file put
there by hand is used as it is. A download streams to `<file>.part` (resumed with an HTTP Range
request when the server allows it) and is renamed into place only once its size, checksum and
content are right, so a truncated file or an HTML error page never sits under the final name.
The engine never prints: progress goes to a callback, news to `logging`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import struct
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import yaml

from engine.errors import WeightsError
from engine.files import publish

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]  # (bytes done, bytes total or None)
SizeCheck = int | tuple[int, int] | None  # exact size, (min, max), or unchecked

USER_AGENT = "text2art-weights/0.1 (python urllib)"
CHUNK = 1 << 20
TIMEOUT_S = 30.0
MB = 1_000_000


class _Rejected(Exception):
    """What arrived is not the file we want (bad size, checksum or content): discard it."""


# -- registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One place a file can be fetched from; sha256/size are of the file at this URL."""

    url: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class WeightFile:
    """A file in the cache: its name, mirrors (tried in order) and plausible size."""

    filename: str
    sources: tuple[Source, ...]
    size: int  # nominal bytes, for display (approximate unless a source says otherwise)
    size_range: tuple[int, int]  # accepted when the source gives no exact size

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.sources]


def _approx(size: int) -> tuple[int, int]:
    # Sizes here are nominal: accept half to 2.5x (a mirror may hold fp32 where the original is
    # fp16), which still rejects error pages and badly truncated files.
    return size // 2, size * 5 // 2


def weight_file(filename: str, size: int, *sources: Source | str) -> WeightFile:
    """A checkpoint of nominal `size` bytes, fetched from the first mirror that works."""
    srcs = tuple(s if isinstance(s, Source) else Source(s) for s in sources)
    return WeightFile(filename, srcs, size, _approx(size))


def yaml_file(filename: str, *sources: Source | str) -> WeightFile:
    """A small config file (100 bytes to 1 MB)."""
    srcs = tuple(s if isinstance(s, Source) else Source(s) for s in sources)
    return WeightFile(filename, srcs, 2_000, (100, MB))


# -- cache -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    """$TEXT2ART_CACHE, else $XDG_CACHE_HOME/text2art, else ~/.cache/text2art (read now)."""
    env = os.environ.get("TEXT2ART_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "text2art"


def cache_path(kind: str, file: WeightFile) -> Path:
    """Where a file of a model of `kind` ('clip' or 'vqgan') lives in the cache."""
    return cache_dir() / kind / file.filename


def asset_path(name: str) -> Path:
    """Path of a file shipped in engine/assets (the bundled models)."""
    return Path(str(resources.files("engine") / "assets" / name))


def ensure_file(
    spec: WeightFile,
    dest: Path,
    *,
    allow_download: bool = True,
    progress: Progress | None = None,
    label: str | None = None,
) -> Path:
    """`dest` if it is there (format checked), else downloaded from `spec`'s mirrors."""
    label = label or dest.name
    if dest.is_file():
        try:
            check_content(dest)
        except _Rejected as exc:
            raise WeightsError(f"{label}: {dest} is unusable ({exc}); delete it") from None
        return dest
    if not allow_download:
        urls = " or ".join(spec.urls)
        raise WeightsError(f"{label} missing: download {urls} and put it at {dest}")
    log.info("downloading %s to %s", label, dest)
    try:
        return download(spec.sources, dest, spec.size_range, progress=progress)
    except WeightsError as exc:
        raise WeightsError(f"{label} missing: {exc}") from None


# -- download ----------------------------------------------------------------------------------


def download(
    urls: str | Source | Sequence[str | Source],
    dest: str | Path,
    expected_size: SizeCheck = None,
    sha256: str | None = None,
    progress: Progress | None = None,
    *,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Fetch `dest` from the first mirror giving a valid file: resumable, checked, atomic."""
    sources = _sources(urls, sha256)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    failures = []
    for i, src in _resume_first(sources, part):
        try:
            _fetch(src, part, progress, timeout)
            _verify(part, src, expected_size if src.size is None else src.size)
        except _Rejected as exc:  # wrong bytes: nothing worth resuming
            _discard(part)
            failures.append(f"mirror {i}: {exc}")
        except (OSError, http.client.HTTPException) as exc:  # keep .part to resume
            failures.append(f"mirror {i}: {_reason(exc)}")
        else:
            publish(part, dest)  # atomic: dest is either absent or whole
            _meta_path(part).unlink(missing_ok=True)
            log.info("downloaded %s", dest)
            return dest
    where = " or ".join(s.url for s in sources)
    raise WeightsError(
        f"could not download {dest.name} ({'; '.join(failures)}); "
        f"get it from {where} and put it at {dest}"
    )


def _sources(urls: str | Source | Sequence[str | Source], sha256: str | None) -> list[Source]:
    items = [urls] if isinstance(urls, (str, Source)) else list(urls)
    if not items:
        raise ValueError("download needs at least one URL")
    return [s if isinstance(s, Source) else Source(s, sha256=sha256) for s in items]


def _part_path(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".part")


def _meta_path(part: Path) -> Path:
    # Records which URL (and ETag) the .part came from: bytes from one mirror are never
    # completed with bytes from another.
    return part.with_suffix(part.suffix + ".json")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)


def _read_meta(part: Path) -> dict[str, str]:
    try:
        meta = json.loads(_meta_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _resume_first(sources: list[Source], part: Path) -> Iterable[tuple[int, Source]]:
    """Mirrors in order (numbered from 1), the one a leftover .part came from first."""
    origin = _read_meta(part).get("url") if part.exists() else None
    numbered = list(enumerate(sources, start=1))
    return sorted(numbered, key=lambda item: item[1].url != origin)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return " ".join(str(exc).split()) or type(exc).__name__


def _request(url: str, offset: int, validator: str | None) -> urllib.request.Request:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
        if validator:  # the server sends the whole file if it changed since
            req.add_header("If-Range", validator)
    return req


def _open(url: str, part: Path, timeout: float) -> tuple[http.client.HTTPResponse, int]:
    """The response and the offset to write at (the .part's size if the server resumes)."""
    meta = _read_meta(part)
    offset = part.stat().st_size if part.exists() and meta.get("url") == url else 0
    try:
        resp = urllib.request.urlopen(_request(url, offset, meta.get("validator")), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:  # 416: the .part is no prefix of the file
            raise
        exc.close()
        _discard(part)
        resp, offset = urllib.request.urlopen(_request(url, 0, None), timeout=timeout), 0
    start = _range_start(resp.headers.get("Content-Range")) if resp.status == 206 else None
    if offset and start != offset:
        offset = 0  # the server ignored the Range (200) or answered another one: restart
    return resp, offset


def _range_start(content_range: str | None) -> int | None:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (content_range or "").strip())
    return int(match.group(1)) if match else None


def _total(resp: http.client.HTTPResponse, offset: int) -> int | None:
    if resp.status == 206:
        match = re.search(r"/(\d+)\s*$", resp.headers.get("Content-Range") or "")
        if match:
            return int(match.group(1))
    length = resp.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _fetch(src: Source, part: Path, progress: Progress | None, timeout: float) -> None:
    """Stream one URL into `part`, appending when the server resumes; short reads raise."""
    resp, offset = _open(src.url, part, timeout)
    with resp:
        total = _total(resp, offset)
        etag = resp.headers.get("ETag") or ""
        validator = (
            etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified")
        )
        meta = {"url": src.url, "validator": validator or ""}
        _meta_path(part).write_text(json.dumps(meta), encoding="utf-8")
        with open(part, "r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            done = _copy(resp, out, offset, total, progress)
    if total is not None and done != total:
        raise ConnectionError(f"connection closed after {done} of {total} bytes")


def _copy(
    resp: http.client.HTTPResponse,
    out: BinaryIO,
    done: int,
    total: int | None,
    progress: Progress | None,
) -> int:
    if progress:
        progress(done, total)
    while chunk := resp.read(CHUNK):
        out.write(chunk)
        done += len(chunk)
        if progress:
            progress(done, total)
    return done


def _verify(part: Path, src: Source, expected_size: SizeCheck) -> None:
    """Content first (the clearest message for an error page), then size, then sha256."""
    check_content(part)
    size = part.stat().st_size
    if isinstance(expected_size, int) and size != expected_size:
        raise _Rejected(f"{size} bytes, expected {expected_size}")
    if isinstance(expected_size, tuple) and not expected_size[0] <= size <= expected_size[1]:
        lo, hi = expected_size
        raise _Rejected(f"{size} bytes, expected between {lo} and {hi}")
    if src.sha256 and sha256_file(part) != src.sha256.lower():
        raise _Rejected(f"sha256 mismatch (expected {src.sha256})")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- content checks ----------------------------------------------------------------------------


def check_content(path: Path) -> None:
    """Raise unless the file looks like what its name says: yaml, safetensors or torch archive."""
    with open(path, "rb") as f:
        head = f.read(512)
    if _looks_like_html(head):
        raise _Rejected("got an HTML/XML page, not the file (the link may be dead or need a login)")
    name = path.name.removesuffix(".part")
    if name.endswith((".yaml", ".yml")):
        _check_yaml(path)
    elif name.endswith(".safetensors"):
        _check_safetensors(path, head)
    else:
        _check_torch(path, head)


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in start


def _check_torch(path: Path, head: bytes) -> None:
    # torch.save writes a zip archive (torch >= 1.6) or a pickle (protocol 2+ starts with 0x80).
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):  # the zip directory sits at the end: truncation
            raise _Rejected("truncated zip archive")
    elif not head.startswith(b"\x80"):
        raise _Rejected(f"not a PyTorch checkpoint (starts with {head[:8]!r})")


def _check_yaml(path: Path) -> None:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _Rejected(f"not valid YAML ({type(exc).__name__})") from None
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("target"), str):
        raise _Rejected("YAML names no model.target")


def _check_safetensors(path: Path, head: bytes) -> None:
    # Layout: u64 little-endian header length, then that many bytes of JSON, then the tensors.
    n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
    if not 2 <= n <= path.stat().st_size - 8 or n > 100 * MB:
        raise _Rejected("not a safetensors file (bad header length)")
    with open(path, "rb") as f:
        f.seek(8)
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise _Rejected("not a safetensors file (bad header)") from None
    if not isinstance(header, dict):
        raise _Rejected("not a safetensors file (bad header)")
