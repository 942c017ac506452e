"""engine.video: frame plan, H.264 MP4 round trip, crisp pixel art, cleanup, flat memory."""

from __future__ import annotations

import math
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from engine.video import (
    H264_ENCODERS,
    VideoError,
    VideoPlan,
    VideoRecorder,
    check_h264,
    plan_video,
    upscale,
    video_size,
)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def smooth_image(t: float, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A gradient with a soft disc whose position depends on t: (H, W, 3) like a render."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    disc = np.exp(-((xx - w * (0.3 + 0.4 * t)) ** 2 + (yy - h / 2) ** 2) / (2 * (w / 8) ** 2))
    rgb = np.stack([xx / w, yy / h, 0.2 + 0.6 * disc], axis=-1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")


def decode(path: Path) -> tuple[dict, list[np.ndarray]]:
    """Stream facts and every frame as (H, W, 3) uint8."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        info = {
            "codec": s.codec_context.name,
            "pix_fmt": s.codec_context.pix_fmt,
            "size": (s.codec_context.width, s.codec_context.height),
            "duration": float(s.duration * s.time_base),
            "rate": s.average_rate,
            "colorspace": s.codec_context.colorspace,
        }
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    return info, frames


@pytest.mark.parametrize("iterations", [1, 7, 60, 149, 150, 899, 900, 901, 2000, 5000])
def test_plan_follows_the_documented_rule(iterations: int) -> None:
    plan = plan_video(iterations)
    captured = [i for i in range(iterations) if plan.captures(i)]
    assert captured[0] == 0 and all(
        b - a == plan.every for a, b in zip(captured, captured[1:], strict=False)
    )
    assert plan.n_frames == len(captured) + 1  # plus the final image
    assert plan.fps == min(60, max(10, math.ceil(plan.n_frames / 15)))
    assert plan.hold_frames == plan.fps  # one second
    assert plan.total_frames == plan.n_frames + plan.fps
    assert plan.n_frames <= 900 and plan.duration <= 16.0
    if iterations >= 150 * plan.every:  # enough frames: 10-15 s plus the one-second hold
        assert 10.0 <= plan.duration - 1 <= 15.0
    if plan.every > 1:  # the step is the smallest that fits 15 s at 60 fps
        assert math.ceil(iterations / (plan.every - 1)) + 1 > 900


def test_plan_values_and_bad_input() -> None:
    assert plan_video(60) == VideoPlan(60, every=1, n_frames=61, fps=10, hold_frames=10)
    assert plan_video(2000) == VideoPlan(2000, every=3, n_frames=668, fps=45, hold_frames=45)
    assert plan_video(2000).duration == pytest.approx(713 / 45)
    assert not plan_video(10).captures(10) and not plan_video(10).captures(-1)
    with pytest.raises(ValueError, match="at least 1"):
        plan_video(0)


def test_video_size_is_even_and_upscaled() -> None:
    assert video_size((45, 27), pixelated=True) == ((540, 324), (540, 324))  # x12, even factor
    assert video_size((40, 40), pixelated=True) == ((520, 520), (520, 520))  # x13
    assert video_size((45, 27), pixelated=False) == ((512, 308), (512, 308))
    assert video_size((601, 401), pixelated=False) == ((601, 401), (602, 402))  # edge padding
    assert video_size((640, 360), pixelated=True) == ((640, 360), (640, 360))


def test_round_trip_h264_yuv420p_frames_and_duration(tmp_path: Path) -> None:
    plan = plan_video(12)
    images = [smooth_image(i / 12) for i in range(12)]
    final = smooth_image(1.0)
    path = tmp_path / "out.mp4"
    rec = VideoRecorder(path, (64, 48), plan, pixelated=False)
    for i, img in enumerate(images):
        rec.maybe_add(i, lambda img=img: img)
    assert rec.close(final) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temporary left

    info, frames = decode(path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["size"] == (512, 384) and info["size"][0] % 2 == info["size"][1] % 2 == 0
    assert info["rate"] == Fraction(plan.fps) and info["colorspace"] == 1  # BT.709 tagged
    assert len(frames) == plan.total_frames == 23
    assert info["duration"] == pytest.approx(plan.duration, abs=0.5 / plan.fps)
    assert psnr(frames[0], upscale(images[0], False)) > 30
    assert psnr(frames[6], upscale(images[6], False)) > 30
    for k in (plan.n_frames - 1, len(frames) - 1):  # the final image, then its hold
        assert psnr(frames[k], upscale(final, False)) > 30
    assert psnr(frames[0], upscale(final, False)) < 25  # the frames really differ
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: playable while loading


def test_pixel_art_stays_crisp(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    palette = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.3], [0.1, 0.5, 1.0]])
    cells = palette[torch.randint(0, 4, (16, 16), generator=g)]  # (16, 16, 3)
    image = cells.permute(2, 0, 1).unsqueeze(0)  # (1, 3, 16, 16)
    path = tmp_path / "pixel.mp4"
    with VideoRecorder(path, (16, 16), plan_video(1), pixelated=True) as rec:
        rec.add(image)
        rec.close(image)
    _, frames = decode(path)
    expected = np.kron((cells.numpy() * 255).round(), np.ones((32, 32, 1)))  # (512, 512, 3)
    assert np.array_equal(
        upscale(Image.fromarray(expected[::32, ::32].astype(np.uint8)), True), expected
    )
    # Crisp: every pixel, those on both sides of each cell border included, keeps its cell's
    # colour (no ringing, no chroma bleeding across edges).
    assert np.abs(frames[-1].astype(np.float64) - expected).max() <= 4
    smooth = upscale(Image.fromarray(expected[::32, ::32].astype(np.uint8)), False)
    assert np.abs(smooth[:, 31::32].astype(np.float64) - expected[:, 31::32]).max() > 60


def test_failed_or_aborted_recording_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "video.mp4"
    with (
        pytest.raises(RuntimeError, match="boom"),
        VideoRecorder(path, (64, 48), plan_video(5)) as rec,
    ):
        rec.add(smooth_image(0))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    rec = VideoRecorder(path, (64, 48), plan_video(5))
    rec.add(smooth_image(0))
    rec.abort()
    rec.abort()  # twice is fine
    assert list(tmp_path.iterdir()) == [] and rec.closed
    with pytest.raises(VideoError, match="closed"):
        rec.add(smooth_image(0))

    with pytest.raises(VideoError, match="no frames"):
        VideoRecorder(path, (64, 48), plan_video(5)).close()
    assert list(tmp_path.iterdir()) == []


def test_bad_frames_are_rejected(tmp_path: Path) -> None:
    rec = VideoRecorder(tmp_path / "v.mp4", (64, 48), plan_video(5))
    with pytest.raises(ValueError, match="64x48"):
        rec.add(smooth_image(0, size=(32, 32)))
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        rec.add(torch.zeros(2, 3, 48, 64))
    rec.abort()


def test_maybe_add_renders_only_planned_iterations(tmp_path: Path) -> None:
    plan = plan_video(1000)  # every 2
    calls: list[int] = []
    image = smooth_image(0, size=(16, 16))

    def get(i: int) -> Image.Image:
        calls.append(i)
        return image

    rec = VideoRecorder(tmp_path / "v.mp4", (16, 16), plan, min_long_side=16)
    added = [rec.maybe_add(i, lambda i=i: get(i)) for i in range(1000)]
    rec.close(image)
    assert calls == list(range(0, 1000, plan.every)) and sum(added) == len(calls)
    assert rec.frames_written == plan.total_frames


def test_missing_encoder_fails_at_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert check_h264() in H264_ENCODERS
    monkeypatch.setattr(av, "codecs_available", {"h264", "mpeg4"})  # decoders only
    with pytest.raises(VideoError, match=r"no H\.264 encoder.*libx264"):
        check_h264()
    with pytest.raises(VideoError):
        VideoRecorder(tmp_path / "v.mp4", (64, 48), plan_video(5))
    assert list(tmp_path.iterdir()) == []


def _peak_traced_memory(iterations: int, path: Path) -> int:
    """Peak Python-traced bytes of a recording of `iterations` iterations of a 32x32 image."""
    frames = [
        torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)
    ]
    tracemalloc.start()
    try:
        rec = VideoRecorder(path, (32, 32), plan_video(iterations), min_long_side=64)
        for i in range(iterations):
            rec.maybe_add(i, lambda i=i: frames[i % 4])
        rec.close(frames[0])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_iterations(tmp_path: Path) -> None:
    short = _peak_traced_memory(100, tmp_path / "short.mp4")
    long = _peak_traced_memory(2000, tmp_path / "long.mp4")
    _, frames = decode(tmp_path / "long.mp4")
    assert len(frames) == plan_video(2000).total_frames  # 713 frames really went through
    # Keeping the 713 (64, 64, 3) frames alive would add ~8.8 MB.
    assert long - short < 2 * 1024 * 1024
