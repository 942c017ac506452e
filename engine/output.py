"""PNG output with the prompt, resolved settings, seed and version in text chunks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from engine.settings import Settings

# Options that describe the machine, not the picture: not stored, so `--from` works anywhere.
_MACHINE_FIELDS = {"device"}


def png_metadata(settings: Settings) -> dict[str, str]:
    """The text chunks written into every PNG."""
    from engine import __version__

    data = settings.model_dump(mode="json", exclude=_MACHINE_FIELDS)
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
