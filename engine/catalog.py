"""Every model text2art knows, one table per kind: a name -> everything about that model.

A CLIP entry says where its weights come from (mirrors and checksums, or a file bundled in
engine/assets, or none for random test weights), which open_clip architecture reads them, how it
loads, and the defaults it brings to runs it guides alone (the `shapes` world's small canvas).
A VQGAN entry adds its downsampling factor f, which sizes resolve with before any weights exist.

Adding a model is adding one entry here; nothing else in the engine branches on a model's name.
Loading goes through `ModelCache` (engine.models), which asks `load_clip` / `load_vqgan` here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import torch

from engine import weights
from engine.weights import MB, Source, WeightFile, asset_path

log = logging.getLogger(__name__)

Kind = Literal["clip", "vqgan"]
KINDS: tuple[Kind, ...] = ("clip", "vqgan")
TINY = "tiny-random"
SHAPES = "shapes"


@dataclass(frozen=True)
class PromptHints:
    """What a person may type for a model: an example prompt and keywords to add to one (the
    web page's placeholder and chips, from `/info`)."""

    example: str
    keywords: tuple[str, ...]


# OpenAI's CLIP read the web's captions: a scene, then the "style keywords" its users add.
WEB_HINTS = PromptHints(
    "an underwater city with glowing jellyfish",
    ("artstation", "unreal engine", "deviantart", "#pixelart", "pencil sketch", "low poly",
     "Thomas Kinkade", "James Gurney"),
)  # fmt: skip


@dataclass(frozen=True)
class WorldDefaults:
    """What a model brings to runs guided by it alone; only values a request leaves out are taken.

    A world with `canvases` decides the canvas for every aspect: that aspect's base size times
    the scale (its own `scale` unless one is given), and for pixel art the aspect's `grids`; a
    quality above draft keeps its own iterations.
    """

    values: Mapping[str, Any]  # Settings field -> value
    # Its pictures must form in few iterations: each style takes its `Drawer.fast_lr`.
    fast: bool = False
    # aspect -> (width, height) at scale 1, and aspect -> pixel-art grid (columns, rows).
    canvases: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    grids: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    scale: float = 1.0
    hints: PromptHints = WEB_HINTS

    def canvas(self, aspect: str, scale: float | None) -> dict[str, Any]:
        """The scale, size and pixel grid of `aspect` in this world ({} without canvases)."""
        if aspect not in self.canvases:
            return {}
        scale = self.scale if scale is None else scale
        w, h = self.canvases[aspect]
        values = {"scale": scale, "size": (max(8, int(w * scale)), max(8, int(h * scale)))}
        if aspect in self.grids:
            values["pixel_size"] = self.grids[aspect]
        return values


@dataclass(frozen=True)
class ClipEntry:
    """One CLIP model by name: its architecture, where its weights are, and how it loads."""

    name: str
    arch: str | None  # open_clip model config ("ViT-B-32-quickgelu"); None: its own module
    loader: Callable[[ClipEntry, Path | None, torch.device], Any]  # (entry, weights, device)
    weights: WeightFile | None = None  # downloaded into the cache on first use
    bundled: tuple[str, ...] = ()  # files in engine/assets
    takes_file: bool = True  # 'NAME=/path' and 'NAME:random' are allowed
    world: WorldDefaults | None = None


@dataclass(frozen=True)
class VqganEntry:
    """One VQGAN by name: factor f, and its config + checkpoint (downloaded or bundled)."""

    name: str
    factor: int
    gumbel: bool = False
    config: WeightFile | None = None
    checkpoint: WeightFile | None = None
    bundled: tuple[str, ...] = ()  # (config yaml, weights) in engine/assets
    random: bool = False  # seeded random weights of `vqgan.TINY_CONFIG` (tests)


@dataclass(frozen=True)
class ModelStatus:
    """One known model and whether its files are in the cache."""

    kind: Kind
    name: str
    cached: bool
    size: int  # bytes, all files together (approximate)
    path: Path  # the weights file (for a VQGAN, its checkpoint)
    bundled: bool = False  # shipped inside the package (the offline 'shapes' models)


# -- loaders ---------------------------------------------------------------------------------


def _load_open_clip(entry: ClipEntry, path: Path | None, device: torch.device) -> Any:
    from engine.perceptor import open_clip_model

    assert entry.arch is not None
    return open_clip_model(entry.name, entry.arch, path, device)


def _load_tiny_clip(entry: ClipEntry, path: Path | None, device: torch.device) -> Any:
    from engine.perceptor import tiny_clip_model

    return tiny_clip_model(entry.name, device)


def _load_shapes_clip(entry: ClipEntry, path: Path | None, device: torch.device) -> Any:
    from engine.shapes.model import load_shapes_clip

    return load_shapes_clip(device, path)


# -- the CLIP table --------------------------------------------------------------------------

_OPENAI = "https://openaipublic.azureedge.net/clip/models"
_HF = "https://huggingface.co"


def _openai_clip(name: str, sha256: str, size_mb: int, timm_repo: str) -> ClipEntry:
    """OpenAI's TorchScript .pt (its URL holds its sha256) and open_clip's copy on the HF hub.

    OpenAI's weights need QuickGELU: the plain open_clip names silently give wrong embeddings.
    """
    filename = name.replace("/", "-") + ".pt"
    arch = name.replace("/", "-") + "-quickgelu"
    file = weights.weight_file(
        filename,
        size_mb * MB,
        Source(f"{_OPENAI}/{sha256}/{filename}", sha256=sha256),
        # A plain state dict for open_clip (no TorchScript): engine.checkpoints reads both.
        f"{_HF}/timm/{timm_repo}/resolve/main/open_clip_pytorch_model.bin",
    )
    return ClipEntry(name, arch, _load_open_clip, weights=file)


# The bundled shapes world is flat shapes seen at 64 px: a small canvas, a coarse pixel grid,
# fewer views and the bundled VQGAN (every style in under half a minute on a 2-core CPU,
# offline). Its pictures are flat colour fields that must form in 100 iterations, so it is a fast
# world: pixel cells and stroke points move faster than CLIP's defaults let them (each style's
# `fast_lr`).
SHAPES_WORLD = WorldDefaults(
    values={"iterations": 100, "cutouts": 16, "strokes": 256, "vqgan_model": SHAPES},
    fast=True,
    # 64 px on the long side for every aspect, in whole 4-pixel cells (the VQGAN's f and the
    # pixel grid's cell): 16x9 cells wide, 13x16 portrait, as close to the aspects' 16:9, 4:5.
    canvases=MappingProxyType({"square": (64, 64), "widescreen": (64, 36), "portrait": (52, 64)}),
    grids=MappingProxyType({"square": (16, 16), "widescreen": (16, 9), "portrait": (13, 16)}),
    hints=PromptHints(
        "a yellow star on a purple background",
        (
            "at the left",
            "at the top right",
            "on a blue background",
            "on a black background",
            "and a green triangle at the right",
        ),
    ),
)

# The test model's world: only its VQGAN (the sizes and steps stay the caller's and the presets').
TINY_WORLD = WorldDefaults(values={"vqgan_model": TINY})

# Sizes: the OpenAI files as their download reports them (rounded); checked as a range.
CLIP_MODELS: Mapping[str, ClipEntry] = MappingProxyType(
    {
        e.name: e
        for e in (
            _openai_clip(
                "ViT-B/32",
                "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
                338,
                "vit_base_patch32_clip_224.openai",
            ),
            _openai_clip(
                "ViT-B/16",
                "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
                335,
                "vit_base_patch16_clip_224.openai",
            ),
            _openai_clip(
                "ViT-L/14",
                "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
                890,
                "vit_large_patch14_clip_224.openai",
            ),
            _openai_clip(
                "RN50",
                "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
                244,
                "resnet50_clip.openai",
            ),
            _openai_clip(
                "RN101",
                "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
                278,
                "resnet101_clip.openai",
            ),
            _openai_clip(
                "RN50x4",
                "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
                402,
                "resnet50x4_clip.openai",
            ),
            # A 2-layer CLIP with 32-pixel input and seeded random weights: tests, in a second.
            # It brings the random VQGAN too, so that no run on it needs a download.
            ClipEntry(TINY, None, _load_tiny_clip, takes_file=False, world=TINY_WORLD),
            # The bundled offline model of engine.shapes (trained by scripts/train_shapes_model.py).
            ClipEntry(
                SHAPES,
                None,
                _load_shapes_clip,
                bundled=("shapes_clip.safetensors",),
                takes_file=False,
                world=SHAPES_WORLD,
            ),
        )
    }
)

# -- the VQGAN table -------------------------------------------------------------------------

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


def _vqgan(name: str, factor: int, gumbel: bool, cfg: WeightFile, ckpt: WeightFile) -> VqganEntry:
    return VqganEntry(name, factor, gumbel, cfg, ckpt)


_yaml_file = weights.yaml_file
_file = weights.weight_file

# Checkpoint sizes are approximate (as the download scripts of VQGAN notebooks report them).
VQGAN_MODELS: Mapping[str, VqganEntry] = MappingProxyType(
    {
        v.name: v
        for v in (
            # Seeded random weights of vqgan.TINY_CONFIG (f=4): tests, in milliseconds.
            VqganEntry(TINY, 4, random=True),
            # A small VQModel trained on the shapes world (scripts/train_shapes_vqgan.py), f=4.
            VqganEntry(SHAPES, 4, bundled=("shapes_vqgan.yaml", "shapes_vqgan.safetensors")),
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


# -- lookups ---------------------------------------------------------------------------------


def clip_entry(name: str) -> ClipEntry:
    """The entry of a CLIP name (without '=path' / ':random'); ValueError lists the choices."""
    if name not in CLIP_MODELS:
        choices = ", ".join(CLIP_MODELS)
        raise ValueError(f"unknown CLIP model {name!r}; choose one of {choices}")
    return CLIP_MODELS[name]


def vqgan_entry(name: str) -> VqganEntry:
    """The entry of a VQGAN name; ValueError lists the choices."""
    if name not in VQGAN_MODELS:
        choices = ", ".join(VQGAN_MODELS)
        raise ValueError(f"unknown VQGAN model {name!r}; choose one of {choices}")
    return VQGAN_MODELS[name]


def known_clip_models() -> list[str]:
    """Names accepted by `load_clip` (besides 'NAME=path' and 'NAME:random')."""
    return list(CLIP_MODELS)


def split_clip_name(name: str) -> tuple[ClipEntry, str | None]:
    """'ViT-B/32' -> (entry, None); 'RN50=/w.pt' -> (entry, '/w.pt'); 'RN50:random' -> 'random'."""
    arch, sep, file = name.partition("=")
    if not sep:
        arch, sep, file = name.partition(":")
        if sep and file != "random":
            raise ValueError(f"unknown CLIP model {name!r}; use 'NAME:random' or 'NAME=/path'")
    entry = clip_entry(arch.strip())
    if sep and not entry.takes_file:
        raise ValueError(f"{entry.name!r} takes no weights file")
    return entry, (file.strip() or None) if sep else None


def vqgan_factor(name: str) -> int:
    """Downsampling factor f of a named VQGAN, without loading anything."""
    return vqgan_entry(name).factor


def world_defaults(clip_models: list[str] | None) -> WorldDefaults | None:
    """The defaults of the one model guiding a run alone, if it brings any."""
    if clip_models is None or len(clip_models) != 1 or clip_models[0] not in CLIP_MODELS:
        return None
    return CLIP_MODELS[clip_models[0]].world


def prompt_hints(clip_models: list[str] | None) -> PromptHints:
    """What to suggest typing to the models guiding a run: a world's own, else the web's."""
    world = world_defaults(clip_models)
    return world.hints if world is not None else WEB_HINTS


# -- files -----------------------------------------------------------------------------------


def model_files(name: str, kind: str | None = None) -> list[tuple[str, WeightFile, Path]]:
    """(label, file, cache path) for each downloaded file of a model; `kind` found from the name."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind is None:
        kind = "clip" if name in CLIP_MODELS else "vqgan" if name in VQGAN_MODELS else None
    if kind == "clip":
        clip = clip_entry(name)
        if clip.weights is None:
            return []
        return [(f"CLIP {name} weights", clip.weights, weights.cache_path("clip", clip.weights))]
    if kind == "vqgan":  # check_rules: not-a-style (a model kind)
        vq = vqgan_entry(name)
        if vq.config is None or vq.checkpoint is None:
            return []
        return [
            (f"VQGAN {name} config", vq.config, weights.cache_path("vqgan", vq.config)),
            (f"VQGAN {name} checkpoint", vq.checkpoint, weights.cache_path("vqgan", vq.checkpoint)),
        ]
    known = ", ".join(dict.fromkeys([*CLIP_MODELS, *VQGAN_MODELS]))  # shapes is both kinds
    raise ValueError(f"unknown model {name!r}; choose one of {known}")


def run_files(
    clip_models: list[str], vqgan_model: str | None
) -> list[tuple[str, WeightFile | None, Path]]:
    """(label, file to download or None, path) of every weights file a run reads.

    `vqgan_model` is None for the styles without one. Built-in and bundled models read no file
    of the cache; a 'NAME=/path' CLIP reads that path (None: nothing to download).
    """
    files: list[tuple[str, WeightFile | None, Path]] = []
    for name in clip_models:
        entry, file = split_clip_name(name)
        if file is not None and file != "random":
            files.append((f"CLIP {name} weights", None, Path(file)))
        elif file is None and not entry.bundled:
            files.extend(model_files(entry.name, "clip"))
    if vqgan_model is not None and not vqgan_entry(vqgan_model).bundled:
        files.extend(model_files(vqgan_model, "vqgan"))
    return files


def missing_files(
    clip_models: list[str], vqgan_model: str | None
) -> list[tuple[str, WeightFile | None, Path]]:
    """The files of `run_files` that are not there yet (nothing is downloaded)."""
    return [f for f in run_files(clip_models, vqgan_model) if not f[2].is_file()]


def clip_checkpoint(
    name: str, *, download: bool = True, progress: weights.Progress | None = None
) -> Path:
    """Path of a CLIP's weights by name (e.g. 'ViT-B/32'), fetched on first use."""
    ((label, spec, path),) = model_files(name, "clip")
    return weights.ensure_file(spec, path, allow_download=download, progress=progress, label=label)


def vqgan_paths(
    name: str = DEFAULT_VQGAN, *, download: bool = True, progress: weights.Progress | None = None
) -> tuple[Path, Path]:
    """(config yaml, checkpoint) of a VQGAN by name: bundled, or fetched on first use."""
    entry = vqgan_entry(name)
    if entry.bundled:
        config, checkpoint = (asset_path(f) for f in entry.bundled)
        return config, checkpoint
    files = model_files(name, "vqgan")
    if not files:
        raise ValueError(f"VQGAN {name!r} has no files (it is built in memory)")
    (cl, cfg, cfg_path), (kl, ckpt, ckpt_path) = files
    fetch = {"allow_download": download, "progress": progress}
    config = weights.ensure_file(cfg, cfg_path, label=cl, **fetch)  # type: ignore[arg-type]
    checkpoint = weights.ensure_file(ckpt, ckpt_path, label=kl, **fetch)  # type: ignore[arg-type]
    return config, checkpoint


def list_models() -> list[ModelStatus]:
    """Every downloadable model, its size and whether all its files are in the cache."""
    rows = []
    for kind, names in (("clip", list(CLIP_MODELS)), ("vqgan", list(VQGAN_MODELS))):
        for name in names:
            files = model_files(name, kind)
            if files:
                cached = all(path.is_file() for _, _, path in files)
                size = sum(spec.size for _, spec, _ in files)
                rows.append(ModelStatus(kind, name, cached, size, files[-1][2]))  # type: ignore[arg-type]
    return rows + bundled_models()


def bundled_models() -> list[ModelStatus]:
    """The models shipped in engine/assets (no download, no cache)."""
    entries: list[tuple[Kind, str, tuple[str, ...]]] = [
        *(("clip", e.name, e.bundled) for e in CLIP_MODELS.values() if e.bundled),
        *(("vqgan", e.name, e.bundled) for e in VQGAN_MODELS.values() if e.bundled),
    ]
    rows = []
    for kind, name, names in entries:
        files = [asset_path(f) for f in names]
        present = all(f.is_file() for f in files)
        size = sum(f.stat().st_size for f in files if f.is_file())
        rows.append(ModelStatus(kind, name, present, size, files[-1], bundled=True))
    return rows


# -- loading ---------------------------------------------------------------------------------


def load_clip(name: str, device: torch.device | str = "cpu") -> Any:
    """A `perceptor.ClipModel` by name, 'NAME:random' or 'NAME=/path/to/weights'."""
    device = torch.device(device)
    entry, file = split_clip_name(name)
    if file == "random":
        from engine.perceptor import open_clip_model

        assert entry.arch is not None
        return open_clip_model(name, entry.arch, None, device)
    if file is not None:
        path: Path | None = Path(file)
    elif entry.bundled:
        path = asset_path(entry.bundled[0])
    elif entry.weights is not None:
        path = clip_checkpoint(entry.name)
    else:
        path = None
    model = entry.loader(entry, path, device)
    model.name = name  # as asked for, 'NAME=/path' included
    return model


def load_vqgan(name: str, device: torch.device | str = "cpu") -> Any:
    """An `engine.vqgan.VQGAN` by name: seeded random, bundled, or downloaded on first use."""
    from engine import vqgan

    entry = vqgan_entry(name)
    if entry.random:
        return vqgan.build_vqgan(vqgan.TINY_CONFIG, torch.Generator().manual_seed(0), device)
    return vqgan.load_vqgan(*vqgan_paths(name), device)
