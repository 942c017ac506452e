"""Image files as model inputs: opened with a pixel bound, cropped before they are resized.

A prompt image or an init image can have any shape; resizing its short side first (as CLIP's own
preprocessing does) would make a 1-pixel-high strip millions of pixels wide. Here the crop is
computed first and PIL resizes only that box, so memory stays bounded by the output size.
"""

from __future__ import annotations

import torch
from PIL import Image

from engine.errors import SettingsError

# Largest image the engine decodes (width x height), for files given on the command line; the
# service has its own, smaller, upload limit (T2A_MAX_UPLOAD_PIXELS).
MAX_IMAGE_PIXELS = 8192 * 8192


def open_rgb(path: str, field: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """The file as an RGB image; SettingsError naming `field` if unreadable or too large."""
    try:
        with Image.open(path) as img:
            width, height = img.size  # from the header: nothing is decoded yet
            if width * height > max_pixels:
                raise SettingsError(
                    field,
                    f"{path!r} is {width}x{height} = {width * height} pixels; "
                    f"at most {max_pixels} are read",
                )
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(field, f"cannot read {path!r} as an image ({exc})") from None


def cover_box(width: int, height: int, out_w: int, out_h: int) -> tuple[float, float, float, float]:
    """The centred box of the source that fills `out_w x out_h` once scaled (CenterCrop's)."""
    scale = max(out_w / width, out_h / height)  # resize so the output is covered
    box_w, box_h = out_w / scale, out_h / scale
    left, top = (width - box_w) / 2, (height - box_h) / 2
    return left, top, left + box_w, top + box_h


def clip_square(img: Image.Image, size: int) -> Image.Image:
    """OpenAI CLIP's preprocessing geometry: bicubic resize of the short side to `size`, then a
    centre crop to `size x size` (https://github.com/openai/CLIP/blob/main/clip/clip.py,
    `_transform`, torchvision's sizes and rounding). PIL resamples only the crop's box, on the
    same sampling grid as resizing the whole image, so memory is bounded by `size`."""
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    sx, sy = w / new_w, h / new_h  # source pixels per resized pixel
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return img.resize((size, size), Image.Resampling.BICUBIC, box=box)


def fit_cover(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`img` centre-cropped to the aspect of `size` (width, height) and resized to it (Lanczos)."""
    box = cover_box(img.width, img.height, *size)
    return img.resize(size, Image.Resampling.LANCZOS, box=box)


def load_image_tensor(path: str, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """An image file centre-cropped to the aspect of `size` and resized to it: (1, 3, H, W)."""
    from torchvision.transforms.functional import pil_to_tensor

    img = fit_cover(open_rgb(path, "init_image"), size)
    return pil_to_tensor(img).float().div(255).unsqueeze(0).to(device)
