"""generate(settings) -> Result: the CLIP-guided optimisation loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from engine.cutouts import Cutouts
from engine.drawers import DrawerContext, create_drawer
from engine.errors import Cancelled
from engine.images import fit_cover, open_rgb
from engine.models import ModelCache
from engine.perceptor import ClipModel, Targets, build_targets
from engine.prompts import parse_prompts
from engine.resolve import ResolvedSettings, resolve
from engine.settings import Limits, Settings

log = logging.getLogger(__name__)


@dataclass
class Step:
    """Progress after one iteration (1-based)."""

    iteration: int
    total: int
    loss: float
    elapsed: float
    _image: Callable[[], Image.Image] = field(repr=False)

    def image(self) -> Image.Image:
        """The current image (rendered on demand: costs a device-to-host copy)."""
        return self._image()


@dataclass
class Result:
    """The final image with the resolved settings and the loss history."""

    image: Image.Image
    settings: ResolvedSettings
    losses: list[float]
    elapsed: float
    svg: str | None = None
    video_path: Path | None = None


def pick_device(name: str | None) -> torch.device:
    """The requested device, or CUDA when available, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_pil(image: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> RGB PIL image (rounded to 8 bits)."""
    arr = image.detach()[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def load_image_tensor(path: str, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """An image file centre-cropped to the aspect of `size` and resized to it: (1, 3, H, W)."""
    from torchvision.transforms.functional import pil_to_tensor

    img = fit_cover(open_rgb(path, "init_image"), size)
    return pil_to_tensor(img).float().div(255).unsqueeze(0).to(device)


def _open_image_prompts(paths: list[str]) -> list[Image.Image]:
    return [open_rgb(p, "image_prompts") for p in paths]


def _views_key(clip: ClipModel) -> tuple[int, bool, float]:
    """Models that take the same views share one batch of cutouts."""
    return clip.input_size, clip.zoom_views, clip.view_strength


class _Objective:
    """Everything the loss needs: CLIP models with their targets and cutouts, extra penalties."""

    def __init__(self, s: ResolvedSettings, clips: list[ClipModel], init: torch.Tensor | None):
        prompts = parse_prompts(s.prompts)
        images = _open_image_prompts(s.image_prompts)
        self.clips = clips
        self.targets: list[Targets] = [build_targets(c, prompts, images) for c in clips]
        self.cutouts = {
            _views_key(c): Cutouts(c.input_size, s.cutouts, zoom=c.zoom_views, wide=c.view_strength)
            for c in clips
        }
        self.settings, self.init = s, init

    def __call__(self, image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Total loss of one render.  image: (1, 3, H, W)"""
        views = {key: cut(image, g) for key, cut in self.cutouts.items()}  # (n, 3, S, S) each
        loss = image.new_zeros(())
        for clip, targets in zip(self.clips, self.targets, strict=True):
            loss = loss + targets.loss(clip.encode_image(views[_views_key(clip)]))
        s = self.settings
        if s.init_weight and self.init is not None:
            loss = loss + s.init_weight * (image - self.init).pow(2).mean()
        if s.smoothness_weight:
            dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
            dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
            loss = loss + s.smoothness_weight * (dx + dy)
        if s.saturation_weight:
            spread = image.amax(dim=1) - image.amin(dim=1)  # (1, H, W)
            loss = loss + s.saturation_weight * spread.pow(2).mean()
        return loss


def generate(
    settings: Settings,
    *,
    on_step: Callable[[Step], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    models: ModelCache | None = None,
    limits: Limits | None = None,
    video_path: str | Path | None = None,
) -> Result:
    """Optimise the style's drawer until CLIP finds the prompts in the image (VQGAN+CLIP loop).

    `settings` are resolved first (engine.resolve; resolving resolved settings changes nothing).
    """
    start = time.perf_counter()
    s = resolve(settings, limits)
    device = pick_device(s.device)
    models = models or ModelCache()
    g = torch.Generator().manual_seed(s.seed)
    init = load_image_tensor(s.init_image, s.size, device) if s.init_image else None
    recorder = _start_video(s, video_path)
    try:
        clips = [models.clip(name, device) for name in s.clip_models]
        drawer = create_drawer(s.style, DrawerContext(s, device, g, init, models))
        objective = _Objective(s, clips, init)
        losses = _optimise(s, drawer, objective, g, on_step, should_stop, recorder)
        with torch.no_grad():
            final = drawer.render()
        if recorder is not None:
            recorder.close(final)
    except BaseException:
        if recorder is not None:
            recorder.abort()
        raise
    return Result(
        image=to_pil(final),
        settings=s,
        losses=losses,
        elapsed=time.perf_counter() - start,
        svg=drawer.to_svg(),
        video_path=Path(video_path) if recorder is not None and video_path else None,
    )


def _start_video(s: ResolvedSettings, video_path: str | Path | None) -> Any:
    """A streaming recorder when a video was asked for; fails early if H.264 is missing."""
    if not s.make_video or video_path is None:
        return None
    from engine.video import VideoRecorder, check_h264, plan_video

    check_h264()
    plan = plan_video(s.iterations)
    return VideoRecorder(Path(video_path), s.size, plan, pixelated=s.style == "pixel art")


def _optimise(
    s: ResolvedSettings,
    drawer: Any,
    objective: _Objective,
    g: torch.Generator,
    on_step: Callable[[Step], None] | None,
    should_stop: Callable[[], bool] | None,
    recorder: Any,
) -> list[float]:
    """The loop: render -> cutouts -> CLIP -> loss -> Adam step -> clamp -> progress."""
    opt = torch.optim.Adam(drawer.parameters())
    losses: list[float] = []
    start = time.perf_counter()
    for i in range(s.iterations):
        if should_stop is not None and should_stop():
            raise Cancelled(f"cancelled at iteration {i} of {s.iterations}")
        opt.zero_grad(set_to_none=True)
        image = drawer.render()  # (1, 3, H, W)
        if recorder is not None:
            recorder.maybe_add(i, image.detach)
        loss = objective(image, g)
        loss.backward()
        opt.step()
        drawer.clamp_()
        losses.append(float(loss.detach()))
        if on_step is not None:
            elapsed = time.perf_counter() - start
            on_step(Step(i + 1, s.iterations, losses[-1], elapsed, partial(to_pil, image)))
    return losses
