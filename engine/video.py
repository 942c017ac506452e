"""A video of the generation: frames streamed to an H.264 MP4 while the loop runs.

Which iterations become frames (see `plan_video`): iteration 0 (the start image), then every
`every`-th iteration (0, k, 2k, ... below `iterations`), each rendered *before* that iteration's
optimiser step, and finally the finished image, which is then held for one more second. The
frame rate follows clipit's rule, fps = frames / 15 s (rounded up to a whole number) clamped to
10..60, and `every` is the smallest step that keeps the video within 15 s at 60 fps, so long runs
give 14-15 s videos and short runs (under 150 iterations) one frame per iteration at 10 fps.

Frames go straight to the encoder (PyAV, which ships its own FFmpeg): no list of frames and no
directory of PNGs, so memory stays flat however many iterations run. The file is written under a
temporary name beside the target and renamed when complete, so a cancelled or failed run leaves
nothing behind.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np
import torch
from PIL import Image

from engine.files import part_path, publish

log = logging.getLogger(__name__)

# Software H.264 encoders in order of preference: PyPI's PyAV wheels ship libx264; LGPL FFmpeg
# builds (conda-forge) have only libopenh264. Hardware encoders need a matching device.
H264_ENCODERS = ("libx264", "libopenh264")
# crf 18 is visually lossless for x264; preset "fast" encodes ~40% faster than "medium" for a
# slightly larger file, which matters on a 2-core Colab box.
_X264_OPTIONS = {"crf": "18", "preset": "fast"}
# openh264 has no constant-quality mode: a bit rate ample for 512-1024 px art.
_FALLBACK_BIT_RATE = 8_000_000
# Small images are upscaled so the long side is at least this many pixels.
MIN_LONG_SIDE = 512

ImageLike = torch.Tensor | Image.Image


class VideoError(RuntimeError):
    """The video cannot be made (no H.264 encoder, nothing recorded, ...)."""


@dataclass(frozen=True)
class VideoPlan:
    """Which iterations are captured and how the frames are played back."""

    iterations: int  # iterations of the run (0 .. iterations-1)
    every: int  # capture iterations 0, every, 2*every, ... < iterations
    n_frames: int  # captured images: the loop's plus the final image
    fps: int
    hold_frames: int  # extra copies of the final image (one second)

    def captures(self, iteration: int) -> bool:
        """Whether the image rendered at this (0-based) iteration becomes a frame."""
        return 0 <= iteration < self.iterations and iteration % self.every == 0

    @property
    def total_frames(self) -> int:
        """Frames in the file: captured images plus the held copies of the last one."""
        return self.n_frames + self.hold_frames

    @property
    def duration(self) -> float:
        """Length of the video in seconds."""
        return self.total_frames / self.fps


def plan_video(
    iterations: int, *, length: float = 15.0, min_fps: int = 10, max_fps: int = 60
) -> VideoPlan:
    """Capture step and frame rate: fps = frames / length clamped to min..max (clipit's rule)."""
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    max_frames = max(2, math.floor(length * max_fps))
    # Smallest step whose loop captures plus the final image fit in max_frames.
    every = max(1, math.ceil(iterations / (max_frames - 1)))
    n_frames = math.ceil(iterations / every) + 1
    fps = min(max_fps, max(min_fps, math.ceil(n_frames / length)))  # never over `length`
    return VideoPlan(iterations, every, n_frames, fps, hold_frames=fps)


def h264_encoder() -> str | None:
    """Name of the first usable H.264 encoder of PyAV's FFmpeg, or None."""
    available = av.codecs_available
    for name in H264_ENCODERS:
        if name not in available:
            continue
        try:
            av.Codec(name, "w")
        except Exception:  # PyAV raises different errors across versions for a missing codec
            continue
        return name
    return None


def check_h264() -> str:
    """Raise `VideoError` unless an H.264 encoder is available; returns its name."""
    name = h264_encoder()
    if name is None:
        raise VideoError(
            "no H.264 encoder found in PyAV's FFmpeg (looked for "
            f"{', '.join(H264_ENCODERS)}); install the PyAV wheel from PyPI "
            "(`pip install av`), which includes libx264, or run without a video"
        )
    return name


def video_size(
    size: tuple[int, int], pixelated: bool, min_long_side: int = MIN_LONG_SIDE
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(scaled, padded) sizes of an image of `size` in the video; padded is even."""
    w, h = size
    long = max(w, h)
    if long >= min_long_side:
        scaled = (w, h)
    elif pixelated:
        # Whole-number factor keeps every pixel a square block; an even factor makes odd
        # sizes even without padding.
        f = math.ceil(min_long_side / long)
        if f > 1 and (w * f % 2 or h * f % 2):
            f += 1
        scaled = (w * f, h * f)
    else:
        s = min_long_side / long
        scaled = (max(2, 2 * round(w * s / 2)), max(2, 2 * round(h * s / 2)))
    padded = (scaled[0] + scaled[0] % 2, scaled[1] + scaled[1] % 2)
    return scaled, padded


def as_pil(image: ImageLike) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) tensor in [0, 1], or a PIL image -> RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    x = image.detach()
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(
            f"expected an image of shape (1, 3, H, W) or (3, H, W), got {tuple(image.shape)}"
        )
    # Quantise on the device so only bytes cross to the host.  (3, H, W) uint8
    x = x.clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).contiguous().cpu().numpy(), "RGB")


def upscale(image: Image.Image, pixelated: bool, min_long_side: int = MIN_LONG_SIDE) -> np.ndarray:
    """The image as it appears in the video: (H, W, 3) uint8, upscaled and padded to even."""
    scaled, padded = video_size(image.size, pixelated, min_long_side)
    if scaled != image.size:
        mode = Image.Resampling.NEAREST if pixelated else Image.Resampling.LANCZOS
        image = image.resize(scaled, mode)
    arr = np.asarray(image.convert("RGB"))  # (H, W, 3)
    pad_h, pad_w = padded[1] - scaled[1], padded[0] - scaled[0]
    if pad_h or pad_w:
        arr = np.pad(arr, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return arr


def _png_bytes(image: Image.Image) -> bytes:
    """A frame kept for the run's state: PNG, quick to write (compress level 1)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class VideoRecorder:
    """Streams frames into an H.264 MP4 (yuv420p, BT.709, +faststart) as they come."""

    def __init__(
        self,
        path: str | Path,
        size: tuple[int, int],
        plan: VideoPlan,
        *,
        pixelated: bool = False,
        min_long_side: int = MIN_LONG_SIDE,
    ):
        self.path = Path(path)
        w, h = size
        self.size = (int(w), int(h))
        self.plan = plan
        self.pixelated = pixelated
        self.min_long_side = min_long_side
        self.frame_size = video_size(self.size, pixelated, min_long_side)[1]  # (W, H), even
        self.frames_written = 0
        # Each captured image as PNG bytes at the picture's own size: a run's state carries
        # them, so a resumed run's video has every frame from the start (`replay`).
        self.captured: list[bytes] = []
        self._last: np.ndarray | None = None  # (H, W, 3): the one frame kept, for the hold
        self._tmp = part_path(self.path)
        self._container: Any = None
        self._stream: Any = self._open(check_h264())

    def _open(self, encoder: str) -> Any:
        """Open the temporary MP4 and its H.264 stream."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # +faststart moves the index to the front so browsers can play while downloading.
        self._container = av.open(
            str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"}
        )
        try:
            stream = self._container.add_stream(encoder, rate=Fraction(self.plan.fps))
            stream.width, stream.height = self.frame_size
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = Fraction(1, self.plan.fps)
            if encoder == "libx264":
                stream.options = dict(_X264_OPTIONS)
            else:
                stream.bit_rate = _FALLBACK_BIT_RATE
            cc = stream.codec_context
            # Tag BT.709, limited range, matching the conversion in `_encode`, so players
            # do not guess (untagged video is read as BT.601 by some and BT.709 by others).
            cc.colorspace = cc.color_primaries = cc.color_trc = 1  # AVCOL_*_BT709
            cc.color_range = 1  # AVCOL_RANGE_MPEG
        except BaseException:
            self.abort()
            raise
        return stream

    @property
    def closed(self) -> bool:
        """Whether `close()` or `abort()` has run."""
        return self._container is None

    def maybe_add(self, iteration: int, get_image: Callable[[], ImageLike]) -> bool:
        """Add `get_image()` when the plan captures this iteration (renders only then)."""
        if not self.plan.captures(iteration):
            return False
        self.add(get_image())
        return True

    def add(self, image: ImageLike) -> None:
        """Encode one frame: a (1, 3, H, W) / (3, H, W) tensor in [0, 1] or a PIL image."""
        if self.closed:
            raise VideoError(f"video {self.path} is already closed")
        pil = as_pil(image)
        if pil.size != self.size:
            raise ValueError(f"frame is {pil.size[0]}x{pil.size[1]}, the video expects "
                             f"{self.size[0]}x{self.size[1]}")  # fmt: skip
        self.captured.append(_png_bytes(pil))
        self._last = upscale(pil, self.pixelated, self.min_long_side)
        self._encode(self._last)

    def replay(self, frames: list[Image.Image]) -> None:
        """Encode the frames a stopped run had captured, in order (resuming it)."""
        for image in frames:
            self.add(image)

    def _encode(self, arr: np.ndarray) -> None:
        """Send one (H, W, 3) uint8 frame to the encoder; mux what comes out."""
        frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
        # Box-filtered chroma (AREA): colours do not bleed across the edges of pixel-art cells.
        frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", interpolation="AREA")
        frame.pts = self.frames_written
        # The codec's time base; the stream's changes to the muxer's once the header is out.
        frame.time_base = Fraction(1, self.plan.fps)
        self.frames_written += 1
        try:
            self._container.mux(self._stream.encode(frame))
        except BaseException:
            self.abort()
            raise

    def close(self, final_image: ImageLike | None = None) -> Path:
        """Add the final image, hold it for one second, finish the file; returns its path."""
        if final_image is not None:
            self.add(final_image)
        if self._last is None:
            self.abort()
            raise VideoError(f"no frames were added to {self.path}")
        try:
            for _ in range(self.plan.hold_frames):
                self._encode(self._last)
            self._container.mux(self._stream.encode(None))  # flush delayed frames
            self._container.close()
            self._container = None
            publish(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._last = None
        log.info("wrote %s: %d frames at %d fps", self.path, self.frames_written, self.plan.fps)
        return self.path

    def abort(self) -> None:
        """Stop recording and remove the partial file (safe to call more than once)."""
        container, self._container, self._last = self._container, None, None
        if container is not None:
            try:
                container.close()
            except Exception:  # a broken stream must not hide the error being handled
                log.debug("closing the partial video failed", exc_info=True)
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.closed:
            self.close()
