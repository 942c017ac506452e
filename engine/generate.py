"""generate(settings) -> Result: the CLIP-guided optimisation loop.

`variations=N` makes N pictures in one batch, from the seeds seed, seed+1, ...: each picture has
its own drawer (its own start), its own generator (its own cutouts) and its own Adam state (Adam
is element-wise, so one optimiser over every picture's parameters is N independent ones); their
views go through CLIP as one batch and their losses are summed, so no picture's gradient depends
on another's. On the CPU picture i is byte for byte the solo run with seed+i (tested).

The loop never waits for the device: the losses stay in a device tensor, read only when a
`Step.loss` is asked for (progress is throttled by its readers) and once at the end.
"""

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
from engine.drawers import DrawerContext, create_drawer, drawer_class
from engine.errors import Cancelled, StateError
from engine.images import fit_cover, open_rgb
from engine.models import ModelCache
from engine.perceptor import ClipModel, Targets, build_targets
from engine.prompts import parse_prompts
from engine.resolve import ResolvedSettings, as_resolved
from engine.runstate import (
    Checkpoint,
    RunState,
    capture,
    check_identity,
    frames_before,
    open_frame,
    restore,
)
from engine.settings import Limits, Settings, picture_seed, solo

log = logging.getLogger(__name__)


@dataclass
class Step:
    """Progress after one iteration (1-based)."""

    iteration: int
    total: int
    _loss: Callable[[], float] = field(repr=False)
    elapsed: float
    _image: Callable[[], Image.Image] = field(repr=False)

    @property
    def loss(self) -> float:
        """This iteration's loss (mean over the variations); reading it waits for the device."""
        return self._loss()

    def image(self) -> Image.Image:
        """The current image (rendered on demand: costs a device-to-host copy); the contact
        sheet of every variation when there are several."""
        return self._image()


@dataclass
class Result:
    """The final image with the resolved settings and the loss history.

    With variations, `images`, `seeds` and `svgs` hold every picture (with the seed that
    reproduces it alone) and `image` is their contact sheet; else `image` is `images[0]`.
    """

    image: Image.Image
    settings: ResolvedSettings
    losses: list[float]  # per iteration, the mean over the variations
    elapsed: float
    svg: str | None = None
    video_path: Path | None = None
    images: list[Image.Image] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    svgs: list[str | None] = field(default_factory=list)
    resumed_from: int = 0  # the iteration this run continued at (0: it started afresh)


def pick_device(name: str | None) -> torch.device:
    """The requested device, or CUDA when available, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_pil(image: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> RGB PIL image (rounded to 8 bits)."""
    arr = image.detach()[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


SHEET_GAP = 4  # pixels of white between two pictures of a contact sheet


def contact_sheet(images: list[Image.Image]) -> Image.Image:
    """The pictures in a grid (2 side by side, 3-4 in two rows), white gaps between them."""
    if len(images) == 1:
        return images[0]
    cols = 2
    rows = (len(images) + 1) // 2
    w, h = images[0].size
    sheet = Image.new("RGB", (cols * w + SHEET_GAP, rows * h + (rows - 1) * SHEET_GAP), "white")
    for i, picture in enumerate(images):
        sheet.paste(picture, ((i % cols) * (w + SHEET_GAP), (i // cols) * (h + SHEET_GAP)))
    return sheet


def _sheet_now(images: list[torch.Tensor]) -> Image.Image:
    return contact_sheet([to_pil(image) for image in images])


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

    def __call__(self, images: list[torch.Tensor], gens: list[torch.Generator]) -> torch.Tensor:
        """The loss of each picture: (N,).  images: N x (1, 3, H, W), each with its generator.

        Every picture's views go through each CLIP model in one batch; each generator is drawn
        from in the same order as in a solo run (view kinds in order), so picture i sees the
        views the solo run with its seed would.
        """
        views = {
            key: torch.cat([cut(image, g) for image, g in zip(images, gens, strict=True)])
            for key, cut in self.cutouts.items()
        }  # (N*n, 3, S, S) each
        losses = [image.new_zeros(()) for image in images]
        for clip, targets in zip(self.clips, self.targets, strict=True):
            embeds = clip.encode_image(views[_views_key(clip)]).chunk(len(images))
            losses = [loss + targets.loss(e) for loss, e in zip(losses, embeds, strict=True)]
        pairs = zip(images, losses, strict=True)
        return torch.stack([self._penalties(image, loss) for image, loss in pairs])

    def _penalties(self, image: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """`loss` plus the optional init, smoothness and saturation terms of one picture."""
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
    resume: RunState | None = None,
    checkpoint: Checkpoint | None = None,
) -> Result:
    """Optimise the style's drawer until CLIP finds the prompts in the image (VQGAN+CLIP loop).

    `settings` are resolved here unless they are `ResolvedSettings` already (the CLI and the
    service resolve once); either way they are checked against `limits` (default `Limits()`).

    A stopped run continues: the `Cancelled` that `should_stop()` causes carries the run's
    state, `checkpoint` is offered it whenever due, and `resume=state` continues from it to the
    bytes of the uninterrupted run on the CPU (another run's state: `StateError`).
    """
    start = time.perf_counter()
    s = as_resolved(settings, limits)
    if resume is not None:  # checked before any model is loaded
        check_identity(resume, s)
    device = pick_device(s.device)
    models = models or ModelCache()
    seeds = [picture_seed(s.seed, k) for k in range(1, s.variations + 1)]
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]  # one per picture
    init = load_image_tensor(s.init_image, s.size, device) if s.init_image else None
    recorder = _start_video(s, video_path)
    try:
        clips = [models.clip(name, device) for name in s.clip_models]
        drawers = [
            create_drawer(s.style, DrawerContext(solo(s, seed), device, g, init, models))
            for seed, g in zip(seeds, gens, strict=True)
        ]
        loop = _Loop(s, drawers, _Objective(s, clips, init), gens, recorder, device)
        loop.restore(resume)
        losses = loop.run(on_step, should_stop, checkpoint)
        with torch.no_grad():
            finals = [drawer.render() for drawer in drawers]
        if recorder is not None:
            recorder.close(finals[0])
    except BaseException:
        if recorder is not None:
            recorder.abort()
        raise
    images, svgs = [to_pil(final) for final in finals], [drawer.to_svg() for drawer in drawers]
    return Result(
        image=contact_sheet(images),
        settings=s,
        losses=losses,
        elapsed=time.perf_counter() - start,
        svg=svgs[0] if len(svgs) == 1 else None,
        video_path=Path(video_path) if recorder is not None and video_path else None,
        images=images,
        seeds=seeds,
        svgs=svgs,
        resumed_from=loop.first,
    )


def _start_video(s: ResolvedSettings, video_path: str | Path | None) -> Any:
    """A streaming recorder when a video was asked for; fails early if H.264 is missing."""
    if not s.make_video or video_path is None:
        return None
    from engine.video import VideoRecorder, check_h264, plan_video

    check_h264()
    plan = plan_video(s.iterations)
    pixelated = drawer_class(s.style).pixelated
    return VideoRecorder(Path(video_path), s.size, plan, pixelated=pixelated)


class _Loop:
    """The loop: render -> cutouts -> CLIP -> loss -> Adam step -> clamp -> progress.

    The losses go into a device tensor: nothing in the loop waits for the device unless a
    progress reader asks for `Step.loss` or `Step.image()`. The video (if any) follows the
    first picture.
    """

    def __init__(
        self,
        s: ResolvedSettings,
        drawers: list[Any],
        objective: _Objective,
        gens: list[torch.Generator],
        recorder: Any,
        device: torch.device,
    ):
        self.s, self.drawers, self.objective, self.gens = s, drawers, objective, gens
        self.recorder = recorder
        self.opt = torch.optim.Adam([group for drawer in drawers for group in drawer.parameters()])
        self.history = torch.empty((s.iterations, len(drawers)), device=device)  # on the device
        self.first = 0  # the iteration this run starts at (> 0 when it resumes)

    def restore(self, state: RunState | None) -> None:
        """Continue from `state` (None: start afresh): parameters, optimiser, generators,
        losses and video frames."""
        if state is None:
            return
        restore(state, self.drawers, self.opt, self.gens, self.history)
        if self.recorder is not None:
            expected = frames_before(state.iteration, self.recorder.plan.every)
            if len(state.frames) != expected:
                raise StateError(
                    f"the state has {len(state.frames)} video frames; iteration "
                    f"{state.iteration} needs {expected}"
                )
            size = self.s.size
            self.recorder.replay([open_frame(f, size, k) for k, f in enumerate(state.frames)])
        self.first = state.iteration

    def snapshot(self, iteration: int) -> RunState:
        """The run's state before `iteration` (between two iterations only)."""
        frames = self.recorder.captured if self.recorder is not None else []
        return capture(iteration, self.s, self.drawers, self.opt, self.gens, self.history, frames)

    def run(
        self,
        on_step: Callable[[Step], None] | None,
        should_stop: Callable[[], bool] | None,
        checkpoint: Checkpoint | None,
    ) -> list[float]:
        """Iterations `first` .. the last; returns every iteration's mean loss."""
        s, start = self.s, time.perf_counter()
        for i in range(self.first, s.iterations):
            if checkpoint is not None and i > self.first and checkpoint.due(i):
                checkpoint.save(self.snapshot(i))
            if should_stop is not None and should_stop():
                raise Cancelled(
                    f"cancelled at iteration {i} of {s.iterations}", partial(self.snapshot, i)
                )
            images = self._step(i)
            if on_step is not None:
                elapsed = time.perf_counter() - start
                loss = partial(_mean_loss, self.history, i)
                picture = (
                    partial(to_pil, images[0]) if len(images) == 1 else partial(_sheet_now, images)
                )
                on_step(Step(i + 1, s.iterations, loss, elapsed, picture))
        return [float(v) for v in self.history.mean(dim=1).tolist()]  # one read, at the end

    def _step(self, i: int) -> list[torch.Tensor]:
        """One iteration; returns the pictures it rendered (before its step)."""
        self.opt.zero_grad(set_to_none=True)
        images = [drawer.render() for drawer in self.drawers]  # N x (1, 3, H, W)
        if self.recorder is not None:
            self.recorder.maybe_add(i, images[0].detach)
        losses = self.objective(images, self.gens)  # (N,)
        losses.sum().backward()
        self.opt.step()
        for drawer in self.drawers:
            drawer.clamp_()
        self.history[i] = losses.detach()
        return images


def _mean_loss(history: torch.Tensor, i: int) -> float:
    """Iteration i's loss, the mean over the pictures (a read from the device)."""
    return float(history[i].mean())
