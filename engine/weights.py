"""Known checkpoints (CLIP, VQGAN), the cache directory, and checked, resumable downloads.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Literal

import yaml

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]  # (bytes done, bytes total or None)
SizeCheck = int | tuple[int, int] | None  # exact size, (min, max), or unchecked

USER_AGENT = "text2art-weights/0.1 (python urllib)"
CHUNK = 1 << 20
TIMEOUT_S = 30.0
MB = 1_000_000
KINDS = ("clip", "vqgan")


class WeightsError(RuntimeError):
    """A weights file is missing or could not be fetched; the message is one line."""


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


@dataclass(frozen=True)
class ClipWeights:
    """OpenAI CLIP weights, used through open_clip's QuickGELU architecture."""

    name: str  # clipit's name, e.g. "ViT-B/32"
    arch: str  # open_clip model config, e.g. "ViT-B-32-quickgelu"
    file: WeightFile


@dataclass(frozen=True)
class VqganWeights:
    """A taming-transformers VQGAN: config yaml, checkpoint, downsampling factor f."""

    name: str
    config: WeightFile
    checkpoint: WeightFile
    factor: int
    gumbel: bool


@dataclass(frozen=True)
class ModelStatus:
    """One known model and whether its files are in the cache."""

    kind: Literal["clip", "vqgan"]
    name: str
    cached: bool
    size: int  # bytes, all files together (approximate)
    path: Path  # the weights file (for a VQGAN, its checkpoint)
    bundled: bool = False  # shipped inside the package (the offline 'shapes' models)


def _approx(size: int) -> tuple[int, int]:
    # Sizes here are nominal: accept half to 2.5x (a mirror may hold fp32 where the original is
    # fp16), which still rejects error pages and badly truncated files.
    return size // 2, size * 5 // 2


def _file(filename: str, size: int, *sources: Source | str) -> WeightFile:
    srcs = tuple(s if isinstance(s, Source) else Source(s) for s in sources)
    return WeightFile(filename, srcs, size, _approx(size))


def _yaml_file(filename: str, *sources: Source | str) -> WeightFile:
    srcs = tuple(s if isinstance(s, Source) else Source(s) for s in sources)
    return WeightFile(filename, srcs, 2_000, (100, MB))


_OPENAI = "https://openaipublic.azureedge.net/clip/models"
_HF = "https://huggingface.co"


def _openai_clip(name: str, arch: str, sha256: str, size_mb: int, timm_repo: str) -> ClipWeights:
    """OpenAI's TorchScript .pt (its URL holds its sha256) and open_clip's copy on the HF hub."""
    filename = name.replace("/", "-") + ".pt"
    return ClipWeights(
        name,
        arch,
        _file(
            filename,
            size_mb * MB,
            Source(f"{_OPENAI}/{sha256}/{filename}", sha256=sha256),
            # A plain state dict for open_clip (no TorchScript): engine.perceptor reads both.
            f"{_HF}/timm/{timm_repo}/resolve/main/open_clip_pytorch_model.bin",
        ),
    )


# Sizes: the OpenAI files as their download reports them (rounded); checked as a range.
CLIP_MODELS: Mapping[str, ClipWeights] = MappingProxyType(
    {
        w.name: w
        for w in (
            _openai_clip(
                "ViT-B/32",
                "ViT-B-32-quickgelu",
                "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
                338,
                "vit_base_patch32_clip_224.openai",
            ),
            _openai_clip(
                "ViT-B/16",
                "ViT-B-16-quickgelu",
                "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
                335,
                "vit_base_patch16_clip_224.openai",
            ),
            _openai_clip(
                "ViT-L/14",
                "ViT-L-14-quickgelu",
                "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
                890,
                "vit_large_patch14_clip_224.openai",
            ),
            _openai_clip(
                "RN50",
                "RN50-quickgelu",
                "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
                244,
                "resnet50_clip.openai",
            ),
            _openai_clip(
                "RN101",
                "RN101-quickgelu",
                "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
                278,
                "resnet101_clip.openai",
            ),
            _openai_clip(
                "RN50x4",
                "RN50x4-quickgelu",
                "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
                402,
                "resnet50x4_clip.openai",
            ),
        )
    }
)

_HEIBOX = "https://heibox.uni-heidelberg.de"
# Somnai's revision-pinned HF copy of the taming files (pytti-core); digests from its manifest.
_SOMNAI = f"{_HF}/Somnai/pytti-vqgan-checkpoints/resolve/debc22c8f285c7734980c464ff992d335dde6e9a"
_ELEIBER = "https://github.com/Eleiber/VQGAN-Mirrors/releases/download/0.0.1"
# Dead for years (many notebooks still use it): last resort only.
_IO_COMMUNITY = "http://mirror.io.community/blob/vqgan"


def _heibox(share: str, path: str) -> str:
    return f"{_HEIBOX}/d/{share}/files/?p={path.replace('/', '%2F')}&dl=1"


def _somnai(name: str, ext: str, sha256: str) -> Source:
    return Source(f"{_SOMNAI}/{name}/{name}.{ext}", sha256=sha256)


def _vqgan(name: str, factor: int, gumbel: bool, cfg: WeightFile, ckpt: WeightFile) -> VqganWeights:
    return VqganWeights(name, cfg, ckpt, factor, gumbel)


# Checkpoint sizes are approximate (as the download scripts of VQGAN notebooks report them).
VQGAN_MODELS: Mapping[str, VqganWeights] = MappingProxyType(
    {
        v.name: v
        for v in (
            _vqgan(
                "imagenet_f16_16384",
                16,
                False,
                _yaml_file(
                    "imagenet_f16_16384.yaml",
                    _heibox("a7530b09fed84f80a887", "/configs/model.yaml"),
                    f"{_HEIBOX}/f/274fb24ed38341bfa753/?dl=1",
                    _somnai(
                        "imagenet",
                        "yaml",
                        "00e2c6189926f1d89ecfef73e9598db77981c1982f0555fbade963ffd16143c7",
                    ),
                    f"{_IO_COMMUNITY}/vqgan_imagenet_f16_16384.yaml",
                ),
                _file(
                    "imagenet_f16_16384.ckpt",
                    980 * MB,
                    _heibox("a7530b09fed84f80a887", "/ckpts/last.ckpt"),
                    f"{_HEIBOX}/f/867b05fc8c4841768640/?dl=1",
                    _somnai(
                        "imagenet",
                        "ckpt",
                        "845a68805098cb666420d5db93df53f3a3b6dd443e6dd85c05759c5b998cd663",
                    ),
                    f"{_IO_COMMUNITY}/vqgan_imagenet_f16_16384.ckpt",
                ),
            ),
            _vqgan(
                "imagenet_f16_1024",
                16,
                False,
                _yaml_file(
                    "imagenet_f16_1024.yaml",
                    _heibox("8088892a516d4e3baf92", "/configs/model.yaml"),
                    f"{_HEIBOX}/f/6ecf2af6c658432c8298/?dl=1",
                    f"{_IO_COMMUNITY}/vqgan_imagenet_f16_1024.yaml",
                ),
                _file(
                    "imagenet_f16_1024.ckpt",
                    958 * MB,
                    _heibox("8088892a516d4e3baf92", "/ckpts/last.ckpt"),
                    f"{_HEIBOX}/f/140747ba53464f49b476/?dl=1",
                    f"{_IO_COMMUNITY}/vqgan_imagenet_f16_1024.ckpt",
                ),
            ),
            _vqgan(
                "openimages_f8_8192",
                8,
                True,
                _yaml_file(
                    "openimages_f8_8192.yaml",
                    _heibox("2e5662443a6b4307b470", "/configs/model.yaml"),
                    _somnai(
                        "openimages",
                        "yaml",
                        "91110bab325067b37f85d1e75895a837d59c292bae4f3097f80c518714d5caff",
                    ),
                ),
                _file(
                    "openimages_f8_8192.ckpt",
                    376 * MB,
                    _heibox("2e5662443a6b4307b470", "/ckpts/last.ckpt"),
                    _somnai(
                        "openimages",
                        "ckpt",
                        "5cd6c74810ab97e00e942c25403f73afc081e8b19987b31ec0d9ff5b68e7ab14",
                    ),
                ),
            ),
            _vqgan(
                "wikiart_16384",
                16,
                False,
                _yaml_file(
                    "wikiart_16384.yaml",
                    f"{_ELEIBER}/wikiart_16384.yaml",
                    _somnai(
                        "wikiart",
                        "yaml",
                        "6e78241d2828ff35b8381839ce249c24a6c468ed429760d33a25e98e7f24499a",
                    ),
                    "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.yaml",
                    f"{_IO_COMMUNITY}/wikiart_16384.yaml",
                ),
                _file(
                    "wikiart_16384.ckpt",
                    980 * MB,
                    f"{_ELEIBER}/wikiart_16384.ckpt",
                    _somnai(
                        "wikiart",
                        "ckpt",
                        "bd08bb46301f98be1712bb2be9f8868cea30b53137cd985d4d6e8da8b3e02c36",
                    ),
                    "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.ckpt",
                    f"{_IO_COMMUNITY}/wikiart_16384.ckpt",
                ),
            ),
            _vqgan(
                "wikiart_1024",
                16,
                False,
                _yaml_file(
                    "wikiart_1024.yaml",
                    f"{_ELEIBER}/wikiart_1024.yaml",
                    f"{_IO_COMMUNITY}/wikiart.yaml",
                ),
                _file(
                    "wikiart_1024.ckpt",
                    958 * MB,
                    f"{_ELEIBER}/wikiart_1024.ckpt",
                    f"{_IO_COMMUNITY}/wikiart.ckpt",
                ),
            ),
            _vqgan(
                "sflckr",
                16,
                False,
                _yaml_file(
                    "sflckr.yaml",
                    _heibox("73487ab6e5314cb5adba", "/configs/2020-11-09T13-31-51-project.yaml"),
                    _somnai(
                        "sflickr",
                        "yaml",
                        "c27f012996f3f1f02580f063be47fd60bdd8528efb04d7318b2cbe8a86505b1b",
                    ),
                ),
                # A whole Net2NetTransformer (engine.vqgan keeps its first stage): size unknown
                # to within a factor of two, so the accepted range is wide.
                WeightFile(
                    "sflckr.ckpt",
                    (
                        Source(_heibox("73487ab6e5314cb5adba", "/checkpoints/last.ckpt")),
                        _somnai(
                            "sflickr",
                            "ckpt",
                            "8a8adea3da8dab412675772831370dd948e0aa97bb11a9488a2f328b58dbc929",
                        ),
                    ),
                    4_000 * MB,
                    (300 * MB, 12_000 * MB),
                ),
            ),
        )
    }
)
DEFAULT_VQGAN = "imagenet_f16_16384"


# -- cache -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    """$TEXT2ART_CACHE, else $XDG_CACHE_HOME/text2art, else ~/.cache/text2art (read now)."""
    env = os.environ.get("TEXT2ART_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "text2art"


def _lookup(registry: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in registry:
        raise ValueError(f"unknown {what} model {name!r}; choose one of {', '.join(registry)}")
    return registry[name]


def model_files(name: str, kind: str | None = None) -> list[tuple[str, WeightFile, Path]]:
    """(label, file, cache path) for each file of a known model; `kind` found from the name."""
    kind = kind or ("clip" if name in CLIP_MODELS else "vqgan" if name in VQGAN_MODELS else None)
    if kind == "clip":
        clip: ClipWeights = _lookup(CLIP_MODELS, name, "CLIP")
        return [(f"CLIP {name} weights", clip.file, cache_dir() / "clip" / clip.file.filename)]
    if kind == "vqgan":
        vq: VqganWeights = _lookup(VQGAN_MODELS, name, "VQGAN")
        folder = cache_dir() / "vqgan"
        return [
            (f"VQGAN {name} config", vq.config, folder / vq.config.filename),
            (f"VQGAN {name} checkpoint", vq.checkpoint, folder / vq.checkpoint.filename),
        ]
    if kind is not None:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    known = ", ".join([*CLIP_MODELS, *VQGAN_MODELS])
    raise ValueError(f"unknown model {name!r}; choose one of {known}")


def clip_checkpoint(name: str, *, download: bool = True, progress: Progress | None = None) -> Path:
    """Path of OpenAI CLIP weights by clipit name (e.g. 'ViT-B/32'), fetched on first use."""
    ((label, spec, path),) = model_files(name, "clip")
    return ensure_file(spec, path, allow_download=download, progress=progress, label=label)


def vqgan_paths(
    name: str = DEFAULT_VQGAN, *, download: bool = True, progress: Progress | None = None
) -> tuple[Path, Path]:
    """(config yaml, checkpoint) of a taming VQGAN by name, fetched on first use."""
    (cl, cfg, cfg_path), (kl, ckpt, ckpt_path) = model_files(name, "vqgan")
    config = ensure_file(cfg, cfg_path, allow_download=download, progress=progress, label=cl)
    checkpoint = ensure_file(ckpt, ckpt_path, allow_download=download, progress=progress, label=kl)
    return config, checkpoint


def list_models() -> list[ModelStatus]:
    """Every known model, its size and whether all its files are in the cache."""
    registries: tuple[tuple[Literal["clip", "vqgan"], Mapping[str, Any]], ...] = (
        ("clip", CLIP_MODELS),
        ("vqgan", VQGAN_MODELS),
    )
    rows = []
    for kind, registry in registries:
        for name in registry:
            files = model_files(name, kind)
            cached = all(path.is_file() for _, _, path in files)
            size = sum(spec.size for _, spec, _ in files)
            rows.append(ModelStatus(kind, name, cached, size, files[-1][2]))
    return rows + bundled_models()


def bundled_models() -> list[ModelStatus]:
    """The 'shapes' CLIP and VQGAN shipped in engine/assets (no download, no cache)."""
    from engine.shapes.model import asset_path
    from engine.vqgan import SHAPES, shapes_paths

    rows = []
    for kind, files in (
        ("clip", (asset_path("shapes_clip.safetensors"),)),
        ("vqgan", shapes_paths()),
    ):
        present = all(f.is_file() for f in files)
        size = sum(f.stat().st_size for f in files if f.is_file())
        rows.append(ModelStatus(kind, SHAPES, present, size, files[-1], bundled=True))  # type: ignore[arg-type]
    return rows


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
            os.replace(part, dest)  # atomic: dest is either absent or whole
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
