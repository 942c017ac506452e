"""generate(settings) -> Result: the CLIP-guided optimisation loop.

`variations=N` makes N pictures in one batch, from the seeds seed, seed+1, ...: each picture has
its own drawer (its own start), its own generator (its own cutouts) and its own optimiser state
(every optimiser offered is element-wise, so one over every picture's parameters is N); their
views go through CLIP as one batch and their losses are summed, so no picture's gradient depends
on another's. On the CPU picture i is byte for byte the solo run with seed+i (tested).

The loop never waits for the device: the losses stay in a device tensor, read only when a
`Step.loss` is asked for (progress is throttled by its readers) and once at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from engine.animation import Timeline
from engine.camera import camera_at
from engine.drawers import DrawerContext, create_drawer, drawer_class
from engine.errors import Cancelled, StateError
from engine.images import load_image_tensor
from engine.interrupt import Tripwire
from engine.models import ModelCache
from engine.objective import Objective
from engine.optimisers import make_optimiser
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
    """Progress after one iteration (1-based, of every iteration of the run: an animation's
    `total` counts all its frames')."""

    iteration: int
    total: int
    _loss: Callable[[], float] = field(repr=False)
    elapsed: float
    _image: Callable[[], Image.Image] = field(repr=False)
    frame: int = 0  # an animation's frame (1-based) this iteration works on; 0: a still
    frames: int = 0  # the animation's frames; 0: a still

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
    on_frame: Callable[[int, Image.Image], None] | None = None,
    should_abort: Callable[[], bool] | None = None,
    on_save: Callable[[int, Image.Image], None] | None = None,
) -> Result:
    """Optimise the style's drawer until CLIP finds the prompts in the image (VQGAN+CLIP loop).

    `settings` are resolved here unless they are `ResolvedSettings` already (the CLI and the
    service resolve once); either way they are checked against `limits` (default `Limits()`).
    An animation (`frames` > 0) is frame after frame of that loop, the camera moving the picture
    between two; `on_frame(index, picture)` sees each finished frame (0-based), and
    `on_save(iteration, picture)` the picture after every `save_every`-th iteration (1-based).

    A stopped run continues: the `Cancelled` that `should_stop()` causes carries the run's
    state, `checkpoint` is offered it whenever due, and `resume=state` continues from it to the
    bytes of the uninterrupted run on the CPU (another run's state: `StateError`).
    `should_abort()` is a cancel that needs no state: it is read inside each iteration too, and
    its `Cancelled` (without a state) comes within one block of a model (`engine.interrupt`).
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
        loop, clips = _make_loop(s, models, device, seeds, gens, init, recorder)
        loop.restore(resume)
        with loop.armed(should_abort, clips):
            losses = loop.run(on_step, should_stop, checkpoint, on_frame, on_save)
        finals = loop.finish(on_frame)
    except BaseException:
        if recorder is not None:
            recorder.abort()
        raise
    images, svgs = [to_pil(final) for final in finals], [d.to_svg() for d in loop.drawers]
    return Result(
        image=contact_sheet(images), settings=s, losses=losses,
        elapsed=time.perf_counter() - start, svg=svgs[0] if len(svgs) == 1 else None,
        video_path=Path(video_path) if recorder is not None and video_path else None,
        images=images, seeds=seeds, svgs=svgs, resumed_from=loop.first,
    )  # fmt: skip


def _make_loop(
    s: ResolvedSettings,
    models: ModelCache,
    device: torch.device,
    seeds: list[int],
    gens: list[torch.Generator],
    init: torch.Tensor | None,
    recorder: Any,
) -> tuple[_Loop, list[Any]]:
    """The run's loop (one drawer per picture) and its CLIP models."""
    clips = [models.clip(name, device) for name in s.clip_models]
    drawers = [
        create_drawer(s.style, DrawerContext(solo(s, seed), device, g, init, models))
        for seed, g in zip(seeds, gens, strict=True)
    ]
    return _Loop(s, drawers, Objective(s, clips, init), gens, recorder, device), clips


def _start_video(s: ResolvedSettings, video_path: str | Path | None) -> Any:
    """A streaming recorder when the run makes a video (asked for, or an animation); fails
    early if H.264 is missing."""
    if not s.wants_video or video_path is None:
        return None
    from engine.video import VideoRecorder, check_h264

    check_h264()
    pixelated = drawer_class(s.style).pixelated
    return VideoRecorder(Path(video_path), s.size, Timeline(s).video_plan(), pixelated=pixelated)


# An animation's later frames refine a picture that is already formed: their optimiser runs at
# this fraction of the learning rate. A fresh Adam moves every value by about its learning rate
# per step whatever the gradient's size, and at the full rate a few steps pull the picture back
# to where it was before the camera moved (measured with the shapes models: at 1.0 most frames
# end closer to the unmoved previous frame than to the moved one; at 0.3 every one follows).
FRAME_LR_SCALE = 0.3


class _Loop:
    """The loop: render -> cutouts -> CLIP -> loss -> optimiser step -> clamp -> progress; an
    animation moves the camera and starts a new optimiser at each frame's first iteration.

    The losses go into a device tensor: nothing in the loop waits for the device unless a
    progress reader asks for `Step.loss` or `Step.image()`. The video (if any) follows the
    first picture.
    """

    def __init__(
        self,
        s: ResolvedSettings,
        drawers: list[Any],
        objective: Objective,
        gens: list[torch.Generator],
        recorder: Any,
        device: torch.device,
    ):
        self.s, self.drawers, self.objective, self.gens = s, drawers, objective, gens
        self.recorder, self.timeline = recorder, Timeline(s)
        self.opt = self._optimiser()
        n = len(drawers)
        self.history = torch.empty((self.timeline.total, n), device=device)  # on the device
        self.first = 0  # the iteration this run starts at (> 0 when it resumes)
        self.current = 0  # the iteration under way (0-based)
        self.trip = Tripwire(None, self.where)  # a prompt cancel (generate arms it)

    def where(self) -> str:
        return f"iteration {self.current + 1} of {self.timeline.total}"

    def armed(
        self, should_abort: Callable[[], bool] | None, clips: list[Any]
    ) -> AbstractContextManager[Tripwire]:
        """A prompt cancel (`should_abort`) armed on CLIP's and the drawers' models."""
        self.trip = Tripwire(should_abort, self.where)
        modules = [clip.model for clip in clips] + [m for d in self.drawers for m in d.modules()]
        return self.trip.armed_on(modules)

    def _optimiser(self, scale: float = 1.0) -> torch.optim.Optimizer:
        groups = [group for drawer in self.drawers for group in drawer.parameters()]
        if scale != 1.0:
            groups = [{**group, "lr": group["lr"] * scale} for group in groups]
        return make_optimiser(self.s.optimiser, groups)

    def restore(self, state: RunState | None) -> None:
        """Continue from `state` (None: start afresh): parameters, optimiser, generators,
        losses and video frames."""
        if state is None:
            return
        t = self.timeline
        if state.iteration > 0 and t.frame_of(state.iteration - 1) >= 1:
            self.opt = self._optimiser(FRAME_LR_SCALE)  # the optimiser of the frame under way
        restore(state, self.drawers, self.opt, self.gens, self.history)
        if self.recorder is not None:
            expected = (
                t.frames_done(state.iteration)
                if t.animated
                else frames_before(state.iteration, self.recorder.plan.every)
            )
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
        on_frame: Callable[[int, Image.Image], None] | None = None,
        on_save: Callable[[int, Image.Image], None] | None = None,
    ) -> list[float]:
        """Iterations `first` .. the last; returns every iteration's mean loss."""
        t, start = self.timeline, time.perf_counter()
        for i in range(self.first, t.total):
            self.current = i
            if checkpoint is not None and i > self.first and checkpoint.due(i):
                checkpoint.save(self.snapshot(i))
            if should_stop is not None and should_stop():
                raise Cancelled(
                    f"cancelled at iteration {i} of {t.total}", partial(self.snapshot, i)
                )
            frame = t.frame_start(i)
            if frame is not None:
                self._next_frame(frame, on_frame)
            elif t.scene_start(i):
                self.opt = self._optimiser()
            images = self._step(i, t.scene_of(i))
            if on_save is not None and self.s.save_every and (i + 1) % self.s.save_every == 0:
                with torch.no_grad():  # the picture after this iteration's step
                    on_save(i + 1, _sheet_now([drawer.render() for drawer in self.drawers]))
            if on_step is not None:
                elapsed = time.perf_counter() - start
                loss = partial(_mean_loss, self.history, i)
                picture = (
                    partial(to_pil, images[0]) if len(images) == 1 else partial(_sheet_now, images)
                )
                shown = t.frame_of(i) + 1 if t.animated else 0
                on_step(Step(i + 1, t.total, loss, elapsed, picture, shown, t.frames))
        return [float(v) for v in self.history.mean(dim=1).tolist()]  # one read, at the end

    def _step(self, i: int, scene: int) -> list[torch.Tensor]:
        """One iteration; returns the pictures it rendered (before its step)."""
        self.opt.zero_grad(set_to_none=True)
        images = [self._rendered(drawer) for drawer in self.drawers]  # N x (1, 3, H, W)
        if self.recorder is not None:
            self.recorder.maybe_add(i, images[0].detach)
        losses = self.objective(images, self.gens, scene, self.trip.check)  # (N,)
        losses.sum().backward()
        self.opt.step()
        for drawer in self.drawers:
            drawer.clamp_()
        self.history[i] = losses.detach()
        return images

    def _rendered(self, drawer: Any) -> torch.Tensor:
        """The drawer's picture; a prompt cancel is checked after it and before its backward."""
        image: torch.Tensor = drawer.render()
        if self.trip.armed:
            self.trip.check()
            if image.requires_grad:
                image.register_hook(lambda grad: self.trip.check())
        return image

    def _next_frame(self, frame: int, on_frame: Callable[[int, Image.Image], None] | None) -> None:
        """Frame `frame - 1` is finished: into the video; the camera moves; a new optimiser."""
        self._finished(frame - 1, on_frame)
        camera = camera_at(self.s, frame)
        if not camera.still:
            for drawer in self.drawers:
                drawer.warp(camera)
        self.opt = self._optimiser(FRAME_LR_SCALE)

    @torch.no_grad()
    def _finished(
        self, index: int, on_frame: Callable[[int, Image.Image], None] | None
    ) -> list[torch.Tensor]:
        """The pictures as they stand: into the video (an animation's frame) and `on_frame`."""
        pictures = [drawer.render() for drawer in self.drawers]
        if self.recorder is not None and self.timeline.animated:
            self.recorder.add(pictures[0])
        if on_frame is not None and self.timeline.animated:
            on_frame(index, _sheet_now(pictures))
        return pictures

    def finish(self, on_frame: Callable[[int, Image.Image], None] | None) -> list[torch.Tensor]:
        """The final pictures; the video closed on the first (an animation's last frame)."""
        if self.timeline.animated:
            finals = self._finished(self.timeline.frames - 1, on_frame)
            if self.recorder is not None:
                self.recorder.close()
            return finals
        with torch.no_grad():
            finals = [drawer.render() for drawer in self.drawers]
        if self.recorder is not None:
            self.recorder.close(finals[0])
        return finals


def _mean_loss(history: torch.Tensor, i: int) -> float:
    """Iteration i's loss, the mean over the pictures (a read from the device)."""
    return float(history[i].mean())
