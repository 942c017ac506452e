"""Animation: story mode, camera moves in every style, one video frame per frame, schedules,
and an animation that stops and resumes where it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from helpers import png_bytes, run_cli, tiny_settings
from PIL import Image

from engine import (
    Cancelled,
    ModelCache,
    Settings,
    SettingsError,
    decode_state,
    encode_state,
    generate,
    read_png_settings,
    resolve,
)
from engine.animation import Timeline
from engine.camera import Camera, parse_schedule


def video_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean())


# -- schedules and the timeline -------------------------------------------------------------------
def test_schedules_are_linear_between_keyframes_and_errors_say_where() -> None:
    s = parse_schedule("0:(1.0), 30:(1.04), 60:(1.0)")
    assert [s.at(f) for f in (0, 15, 30, 45, 60, 90)] == pytest.approx(
        [1.0, 1.02, 1.04, 1.02, 1.0, 1.0]
    )
    assert parse_schedule("1.25").at(7) == 1.25
    with pytest.raises(SettingsError, match=r"zoom: at position 10: expected a number or keyf"):
        Settings.create(zoom="0:(1.0), 30:1.04")
    with pytest.raises(
        SettingsError, match="angle: at position 8: values must be between -90 and 90, got 120"
    ):
        Settings.create(angle="0:(0), 10:(120)")
    with pytest.raises(SettingsError, match="translate_x: at position 8: frame 3 is given twice"):
        Settings.create(translate_x="3:(1), 3:(2)")
    assert Settings.create(zoom=1.25, angle="10").zoom == "1.25"


def test_the_timeline_counts_every_frame_s_iterations_and_scenes() -> None:
    s = resolve(tiny_settings(iterations=10, frames=4, frame_iterations=3, prompts="a ^ b"))
    t = Timeline(s)
    assert s.total_iterations == t.total == 10 + 3 * 3
    assert [t.frame_of(i) for i in (0, 9, 10, 12, 13, 18)] == [0, 0, 1, 1, 2, 3]
    assert [t.frame_start(i) for i in (9, 10, 11, 13, 16)] == [None, 1, None, 2, 3]
    assert [t.frames_done(i) for i in (10, 11, 13, 14, 18)] == [0, 1, 1, 2, 3]
    assert [t.scene_of(i) for i in (0, 10, 13, 16)] == [0, 0, 1, 1]
    still = Timeline(resolve(tiny_settings(iterations=10, prompts="a ^ b ^ c")))
    assert [still.scene_of(i) for i in range(10)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [i for i in range(10) if still.scene_start(i)] == [4, 7]
    assert not any(t.scene_start(i) for i in range(t.total))  # an animation's frames do it


def test_too_many_iterations_in_an_animation_are_refused() -> None:
    with pytest.raises(SettingsError, match="frame_iterations: the animation would run 5010"):
        resolve(tiny_settings(iterations=10, frames=201, frame_iterations=25))
    with pytest.raises(SettingsError, match="frames: must be between 0 and 240, got 300"):
        resolve(tiny_settings(frames=300, frame_iterations=1))


# -- camera moves, every style ----------------------------------------------------------------
CENTRED = "a red circle on a blue background"
# A centred circle looks the same turned: the turn is seen on a circle off the centre.
MOVES = {
    "zoom": ({"zoom": "1.25"}, Camera(zoom=1.25), CENTRED),
    "angle": ({"angle": "10"}, Camera(angle=10.0), "a red circle at the left on a blue background"),
    "pan": ({"translate_x": "8"}, Camera(translate_x=8.0), CENTRED),
}


@pytest.mark.semantic
@pytest.mark.parametrize("style", ["pixel art", "painting"])
@pytest.mark.parametrize("move", list(MOVES))
def test_each_frame_follows_the_moved_previous_frame(
    style: str, move: str, models: ModelCache, tmp_path: Path
) -> None:
    values, camera, prompt = MOVES[move]
    s = Settings.create(
        prompts=prompt, style=style, clip_models=["shapes"], seed=3, iterations=20, frames=8,
        frame_iterations=3, strokes=128, device="cpu", **values,
    )  # fmt: skip
    frames: list[Image.Image] = []
    result = generate(s, models=models, video_path=tmp_path / "a.mp4",
                      on_frame=lambda i, picture: frames.append(picture))  # fmt: skip
    assert len(video_frames(tmp_path / "a.mp4")) == 8  # one video frame per frame, no hold
    assert len(frames) == 8 and png_bytes(frames[-1]) == png_bytes(result.image)
    for before, after in zip(frames, frames[1:], strict=False):
        prev, now = tensor(before), tensor(after)
        moved = camera.warp(prev)
        assert mse(now, moved) < mse(now, prev), (move, style)


def test_the_image_style_animates_end_to_end(models: ModelCache, tmp_path: Path) -> None:
    s = tiny_settings(style="image", vqgan_model="tiny-random", iterations=4, frames=3,
                      frame_iterations=2, zoom="1.1", angle="0:(0), 2:(5)", fps=6)  # fmt: skip
    steps: list[Any] = []
    result = generate(s, models=models, video_path=tmp_path / "i.mp4", on_step=steps.append)
    assert [(st.iteration, st.frame, st.frames) for st in steps] == [
        (1, 1, 3), (2, 1, 3), (3, 1, 3), (4, 1, 3), (5, 2, 3), (6, 2, 3), (7, 3, 3), (8, 3, 3)
    ]  # fmt: skip
    assert steps[-1].total == 8 and len(result.losses) == 8
    with av.open(str(tmp_path / "i.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 6 and sum(1 for _ in container.decode(video=0)) == 3


def test_an_uncovered_border_is_filled_never_black(models: ModelCache) -> None:
    frames: list[Image.Image] = []
    s = tiny_settings(iterations=3, frames=2, frame_iterations=1, zoom="0.5")  # zoom out
    generate(s, models=models, on_frame=lambda i, p: frames.append(p))
    border = np.asarray(frames[1])[:2]  # the top rows: uncovered by a zoom out
    assert border.max() > 0 and (border.sum(axis=2) > 30).mean() > 0.9


def test_painting_strokes_move_exactly_and_fill_what_a_zoom_out_uncovers(
    models: ModelCache,
) -> None:
    from engine.drawers import DrawerContext, create_drawer

    s = resolve(tiny_settings(style="painting", strokes=64, size=(64, 64)))
    drawer = create_drawer(s.style, DrawerContext(s, torch.device("cpu"),
                                                  torch.Generator().manual_seed(1)))  # fmt: skip
    before = drawer.points.detach().clone()
    pan = Camera(translate_x=5.0, translate_y=-3.0)
    drawer.warp(pan)
    moved = torch.isclose(drawer.points, before + torch.tensor([5.0, -3.0])).all(dim=(1, 2))
    holes = pan.uncovered((64, 64))  # a 5 px strip on the left, 3 px at the bottom
    assert round(float(holes.float().mean()) * 64) == (~moved).sum() > 0
    for start in drawer.points[~moved, 0].detach():  # the others start in the strips
        assert holes[int(start[1]), int(start[0])]
    drawer.warp(Camera(zoom=0.5))  # 3/4 of the canvas uncovered: 3/4 of the strokes go there
    starts = drawer.points[:, 0].detach()
    centre = ((starts - 32).abs() < 16).all(dim=1)
    assert (~centre).sum() >= 40


# -- story mode ----------------------------------------------------------------------------------
@pytest.mark.semantic
def test_a_story_changes_its_picture_scene_by_scene(models: ModelCache, tmp_path: Path) -> None:
    s = Settings.create(
        prompts="a red circle on a blue background ^ a blue circle on a red background",
        style="pixel art", clip_models=["shapes"], seed=3, iterations=200, make_video=True,
        device="cpu",
    )  # fmt: skip
    result = generate(s, models=models, video_path=tmp_path / "s.mp4")
    frames = video_frames(tmp_path / "s.mp4")
    mid_first = frames[len(frames) * 2 // 5]  # iteration ~86 of 200: still the first scene

    def centre_and_corner(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w, _ = rgb.shape
        centre = rgb[h * 2 // 5 : h * 3 // 5, w * 2 // 5 : w * 3 // 5].reshape(-1, 3).mean(0)
        corner = rgb[: h // 8, : w // 8].reshape(-1, 3).mean(0)
        return centre, corner

    centre, corner = centre_and_corner(mid_first.astype(float))
    assert centre[0] > centre[2] and corner[2] > corner[0]  # red centre on blue
    centre, corner = centre_and_corner(np.asarray(result.image, dtype=float))
    assert centre[2] > centre[0] and corner[0] > corner[2]  # blue centre on red


# -- reproducing and resuming ------------------------------------------------------------------
def test_from_the_final_png_reproduces_the_animation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["generate", "a castle", "--clip-model", "tiny-random", "--size", "32x32", "--style",
            "pixel art", "--cutouts", "4", "--seed", "2", "--iterations", "3", "--frames", "4",
            "--frame-iterations", "2", "--zoom", "0:(1.0), 3:(1.2)", "--angle", "3"]  # fmt: skip
    code, out, err = run_cli([*args, "--out", str(tmp_path / "a.png"),
                              "--save-frames", str(tmp_path / "frames")], capsys)  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [
        "frame-0001.png", "frame-0002.png", "frame-0003.png", "frame-0004.png"
    ]  # fmt: skip
    meta = read_png_settings(tmp_path / "a.png")
    assert (meta["frames"], meta["zoom"], meta["angle"]) == (4, "0:(1.0), 3:(1.2)", "3")
    code, out, err = run_cli(["generate", "--from", str(tmp_path / "a.png"),
                              "--out", str(tmp_path / "b.png")], capsys)  # fmt: skip
    assert code == 0, err
    for ext in ("png", "mp4"):
        assert (tmp_path / f"a.{ext}").read_bytes() == (tmp_path / f"b.{ext}").read_bytes()
    last = (tmp_path / "frames" / "frame-0004.png").read_bytes()
    assert png_bytes(Image.open(tmp_path / "a.png")) == png_bytes(Image.open(_io(last)))


def _io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


@pytest.mark.parametrize("stop_at", [5, 7, 8])  # inside frame 1, at frame 2's start, inside it
def test_an_animation_resumes_where_it_stopped(
    stop_at: int, models: ModelCache, tmp_path: Path
) -> None:
    s = resolve(tiny_settings(style="painting", strokes=24, iterations=5, frames=4,
                              frame_iterations=3, zoom="0.8", translate_y="2"))  # fmt: skip
    whole = generate(s, models=models, video_path=tmp_path / "a.mp4")
    calls = [0]

    def stop() -> bool:
        calls[0] += 1
        return calls[0] > stop_at

    with pytest.raises(Cancelled) as caught:
        generate(s, models=models, video_path=tmp_path / "b.mp4", should_stop=stop)
    assert caught.value.state is not None
    state = decode_state(encode_state(caught.value.state()))
    assert len(state.frames) == Timeline(s).frames_done(stop_at)
    resumed = generate(s, models=models, video_path=tmp_path / "b.mp4", resume=state)
    assert png_bytes(resumed.image) == png_bytes(whole.image)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


# -- the service --------------------------------------------------------------------------------
def test_an_animation_job_reports_frames_and_keeps_one_video_frame_each(
    tmp_path: Path, models: ModelCache
) -> None:
    from helpers import job_state, jobs_config, parse_sse, serving, submit, wait_for

    with serving(jobs_config(tmp_path), models) as client:
        created = submit(client, iterations=4, frames=6, frame_iterations=2, zoom="1.1",
                         angle="0:(0), 5:(6)", fps=8)  # fmt: skip
        job_id = created["id"]
        body = wait_for(lambda: job_state(client, job_id, "succeeded"), 120, "the animation")
        assert body["progress"] == {"iteration": 14, "total": 14, "fraction": 1.0,
                                    "frame": 6, "frames": 6}  # fmt: skip
        assert body["settings"]["frames"] == 6 and body["settings"]["angle"] == "0:(0), 5:(6)"
        events = parse_sse(client.get(f"/jobs/{job_id}/events").text)
        progress = [e["data"] for e in events if e["event"] == "progress"]
        assert progress and progress[-1]["frames"] == 6 and progress[-1]["frame"] == 6
        video = client.get(f"/outputs/{job_id}.mp4")
        assert video.status_code == 200
        (tmp_path / "got.mp4").write_bytes(video.content)
        assert len(video_frames(tmp_path / "got.mp4")) == 6
        for field, value, words in [
            ("zoom", "0:(1.0), 30:1.04", "at position 10: expected a number or keyframes"),
            ("translate_y", "0:(999)", "values must be between -256 and 256"),
            ("frames", "-1", "greater than or equal to 0"),
        ]:
            answer = client.post("/jobs", data={"prompts": "a castle", field: value})
            assert answer.status_code == 422, answer.text
            assert field in answer.text and words in answer.text
