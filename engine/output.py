"""Writing a result: the PNG (prompt, resolved settings, seed and version in text chunks), the SVG
of the painting style, and where the video went. Used by the CLI and the HTTP service alike."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, PngImagePlugin

from engine.files import atomic_write
from engine.settings import Settings, record, solo
from engine.version import __version__

if TYPE_CHECKING:
    from engine.generate import Result

# Options that describe the machine, not the picture: not stored, so `--from` works anywhere.
_MACHINE_FIELDS = {"device"}


def png_metadata(settings: Settings) -> dict[str, str]:
    """The text chunks written into every PNG."""
    data = record(settings, _MACHINE_FIELDS)
    return {
        "prompt": settings.prompts,
        "seed": str(settings.seed),
        "text2art:settings": json.dumps(data, sort_keys=True),
        "Software": f"text2art {__version__}",
    }


def save_png(image: Image.Image, settings: Settings, path: str | Path) -> Path:
    """Write the image with its metadata; returns the path."""
    info = PngImagePlugin.PngInfo()
    for key, value in png_metadata(settings).items():
        info.add_itxt(key, value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=info)
    return path


def output_filename(stem: str, key: str) -> str:
    """The file name of an output key: 'png' -> `stem.png`, '2.png' -> `stem-2.png` (picture 2
    of a batch of variations). The one naming rule of outputs, for the CLI and the service."""
    index, _, ext = key.rpartition(".")
    return f"{stem}-{index}.{ext}" if index else f"{stem}.{ext}"


def save_outputs(
    result: Result, directory: str | Path, stem: str, settings: Any = None
) -> dict[str, Path]:
    """Write `stem.png` (with metadata) and `stem.svg` (painting) into `directory`; with
    variations, `stem.png` is their contact sheet (its metadata re-makes the whole batch) and
    each picture is also `stem-1.png`, `stem-2.png`, ... (keys '1.png', ...) whose metadata
    holds its own seed and `variations: 1`, so `--from` makes that picture alone.

    Each file is written under a hidden temporary name and renamed into place, so a reader never
    sees half a file. `settings` replaces the result's in the PNG metadata (the service stores
    them without server paths). Returns every kept file by output key (`output_filename`), the
    video included.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chosen = settings or result.settings
    files: dict[str, Path] = {}

    def write(key: str, save: Callable[[Path], Any]) -> None:
        files[key] = atomic_write(directory / output_filename(stem, key), save)

    write("png", partial(save_png, result.image, chosen))
    if result.svg is not None:
        write("svg", partial(_save_text, result.svg))
    if len(result.images) > 1:  # the sheet above, and each picture with its own seed
        for i, (picture, seed, svg) in enumerate(
            zip(result.images, result.seeds, result.svgs, strict=True), start=1
        ):
            write(f"{i}.png", partial(save_png, picture, solo(chosen, seed)))
            if svg is not None:
                write(f"{i}.svg", partial(_save_text, svg))
    if result.video_path is not None and Path(result.video_path).exists():
        files["mp4"] = Path(result.video_path)
    return files


def _save_text(text: str, path: Path) -> None:
    path.write_text(text, encoding="utf-8")


def read_png_settings(path: str | Path) -> dict[str, Any]:
    """The settings stored in a text2art PNG, as a dict for `Settings.create(**...)`."""
    with Image.open(path) as img:
        text = getattr(img, "text", {}) or img.info
        raw = text.get("text2art:settings")
    if raw is None:
        raise ValueError(f"{path} holds no text2art settings (was it made by text2art?)")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: malformed text2art settings")
    return data
