"""Creative controls the peers have (issue 29): each is a setting that changes the picture, is
checked naming its field, resumes exactly and round-trips through `--from`, /generate and /jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import png_bytes, run_cli, tiny_settings
from PIL import Image

from engine import (
    Cancelled,
    ModelCache,
    Result,
    Settings,
    SettingsError,
    StateError,
    decode_state,
    encode_state,
    generate,
    read_png_settings,
    resolve,
)
from engine.optimisers import OPTIMISERS


def _run(models: ModelCache, **overrides: Any) -> Result:
    return generate(resolve(tiny_settings(**overrides)), models=models)


def _cells(result: Result) -> torch.Tensor:
    """The picture as (3, H, W) floats in [0, 1]."""
    data = torch.frombuffer(bytearray(result.image.tobytes()), dtype=torch.uint8)
    w, h = result.image.size
    return data.view(h, w, 3).permute(2, 0, 1).float() / 255


def _stopped_state(s: Any, models: ModelCache, at: int, state: Any = None) -> Any:
    """Run (or continue `state`) until 0-based iteration `at`; the state through its file."""
    calls = [state.iteration if state is not None else 0]

    def stop() -> bool:
        calls[0] += 1
        return calls[0] > at

    with pytest.raises(Cancelled) as caught:
        generate(s, models=models, resume=state, should_stop=stop)
    assert caught.value.state is not None
    return decode_state(encode_state(caught.value.state()))


# -- optimiser --------------------------------------------------------------------------------
def test_every_optimiser_runs_and_gives_its_own_picture(models: ModelCache) -> None:
    pictures = {name: png_bytes(_run(models, optimiser=name).image) for name in OPTIMISERS}
    assert len(set(pictures.values())) == len(OPTIMISERS), "two optimisers gave one picture"
    assert pictures["adam"] == png_bytes(_run(models).image)  # the default is today's Adam
    assert resolve(tiny_settings(optimiser="NAdam")).optimiser == "nadam"
    with pytest.raises(SettingsError, match="optimiser: unknown value 'sgd'; choose one of adam"):
        tiny_settings(optimiser="sgd")


@pytest.mark.parametrize("optimiser", ["nadam", "rmsprop", "adagrad", "adamax"])
def test_a_stopped_run_resumes_to_the_same_bytes_with_any_optimiser(
    optimiser: str, models: ModelCache
) -> None:
    s = resolve(tiny_settings(optimiser=optimiser, iterations=6, variations=2))
    whole = generate(s, models=models)
    state = _stopped_state(s, models, 3)
    names = {name.split(".")[2] for name in state.tensors if name.startswith("optim.")}
    assert names  # the optimiser's own moments travel in the state
    resumed = generate(s, models=models, resume=state)
    assert [png_bytes(p) for p in resumed.images] == [png_bytes(p) for p in whole.images]
    assert resumed.losses == whole.losses


def test_a_state_of_another_optimiser_or_with_foreign_moments_is_refused(
    models: ModelCache,
) -> None:
    s = resolve(tiny_settings(optimiser="nadam", iterations=6))
    state = _stopped_state(s, models, 3)
    other = resolve(tiny_settings(optimiser="rmsprop", iterations=6))
    with pytest.raises(StateError, match="optimiser is 'nadam' there, 'rmsprop' here"):
        generate(other, models=models, resume=state)
    default = resolve(tiny_settings(iterations=6))
    with pytest.raises(StateError, match="optimiser is 'nadam' there, None here"):
        generate(default, models=models, resume=state)
    for name, value, words in [
        ("optim.0.mu_product", torch.ones(2), r"mu_product is float32 \[2\], expected \[\]"),
        ("optim.0.square_avg", torch.ones(1, 3, 8, 8), "not kept by this run's optimiser"),
    ]:
        broken = _stopped_state(s, models, 3)
        broken.tensors[name] = value
        with pytest.raises(StateError, match=words):
            generate(s, models=models, resume=broken)
    broken = _stopped_state(s, models, 3)
    del broken.tensors["optim.0.mu_product"]
    with pytest.raises(StateError, match=r"lacks \['mu_product'\]"):
        generate(s, models=models, resume=broken)


# -- symmetry, tile, init_noise -----------------------------------------------------------------
def _roughness(a: torch.Tensor) -> float:
    """Mean difference between neighbouring pixels inside the picture, across and down."""
    return float((a[:, :, 1:] - a[:, :, :-1]).abs().mean() + (a[:, 1:] - a[:, :-1]).abs().mean())


def _seam(a: torch.Tensor) -> float:
    """Mean difference across the wrap-around edges (last column to first, last row to first)."""
    return float((a[:, :, 0] - a[:, :, -1]).abs().mean() + (a[:, 0] - a[:, -1]).abs().mean())


def test_symmetry_makes_the_picture_its_own_mirror_image(models: ModelCache) -> None:
    def mirror_gap(picture: torch.Tensor, dim: int) -> float:
        return float((picture - picture.flip(dim)).abs().mean())

    free = _cells(_run(models, iterations=20))
    across = _cells(_run(models, iterations=20, symmetry="horizontal"))
    down = _cells(_run(models, iterations=20, symmetry="vertical", symmetry_weight=5))
    assert mirror_gap(across, -1) < 0.2 * mirror_gap(free, -1)
    assert mirror_gap(across, -2) > 0.5 * mirror_gap(free, -2)  # only the asked mirror
    assert mirror_gap(down, -2) < 0.2 * mirror_gap(free, -2)
    with pytest.raises(SettingsError, match="symmetry: unknown value 'diagonal'; choose one of"):
        tiny_settings(symmetry="diagonal")
    with pytest.raises(SettingsError, match="symmetry_weight: has no effect without symmetry"):
        resolve(tiny_settings(symmetry_weight=3))


def test_tile_makes_the_wrap_around_edge_as_smooth_as_the_inside(models: ModelCache) -> None:
    plain = _cells(_run(models, iterations=20, smoothness_weight=50))
    tiled = _cells(_run(models, iterations=20, smoothness_weight=50, tile=True))
    assert _seam(tiled) < 1.25 * _roughness(tiled)
    assert _seam(plain) > 1.5 * _roughness(plain)  # without tile the edges do not meet


def test_a_tile_animation_wraps_what_the_camera_moves_out(models: ModelCache) -> None:
    from engine.camera import Camera

    picture = torch.rand(1, 3, 8, 12)
    moved = Camera(translate_x=3, wrap=True).warp(picture)
    assert torch.allclose(moved, picture.roll(3, dims=-1), atol=1e-5)
    result = _run(models, tile=True, frames=3, frame_iterations=1, translate_x=4, iterations=2)
    assert result.settings.tile and len(result.images) == 1


@pytest.mark.parametrize("style", ["pixel art", "painting"])
def test_init_noise_gradient_starts_smooth_and_pixels_do_not(
    style: str, models: ModelCache
) -> None:
    def start(kind: str) -> torch.Tensor:
        return _cells(_run(models, style=style, strokes=16, iterations=1, init_noise=kind))

    pixels, gradient, perlin = start("pixels"), start("gradient"), start("perlin")
    assert _roughness(gradient) < 0.2 * _roughness(pixels)
    assert _roughness(perlin) < 0.5 * _roughness(pixels)
    assert png_bytes(_run(models, style=style, strokes=16, iterations=1).image) != png_bytes(
        _run(models, style=style, strokes=16, iterations=1, init_noise="gradient").image
    )


def test_init_noise_is_checked_and_the_image_style_encodes_it(
    models: ModelCache, tmp_path: Any
) -> None:
    image = {"style": "image", "vqgan_model": "tiny-random", "iterations": 1}
    default = png_bytes(_run(models, **image).image)
    assert png_bytes(_run(models, **image, init_noise="pixels").image) != default
    with pytest.raises(SettingsError, match="init_noise: unknown value 'snow'; choose one of"):
        tiny_settings(init_noise="snow")
    init = tmp_path / "init.png"
    init.write_bytes(png_bytes(size=(32, 32)))
    with pytest.raises(SettingsError, match="init_noise: the init image is the start"):
        resolve(tiny_settings(init_image=str(init), init_noise="perlin"))


# -- augments and cut_power ----------------------------------------------------------------------
def test_each_augmentation_changes_the_views_and_cut_power_their_size() -> None:
    from engine.cutouts import Cutouts, zoom_quads
    from engine.presets import AUGMENTS, DEFAULT_AUGMENTS

    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))

    def views(augments: set[str]) -> torch.Tensor:
        return Cutouts(16, 16, augments=sorted(augments))(image, torch.Generator().manual_seed(2))

    today = views(set(DEFAULT_AUGMENTS))
    assert torch.equal(today, Cutouts(16, 16)(image, torch.Generator().manual_seed(2)))
    for name in AUGMENTS:
        toggled = views(set(DEFAULT_AUGMENTS) ^ {name})
        assert not torch.equal(toggled, today), f"{name} changed nothing"
    assert torch.equal(views(set()), views(set())) and not torch.equal(views(set()), today)

    def mean_area(power: float) -> float:
        quads = zoom_quads(2000, 100, 100, torch.Generator().manual_seed(3), power)
        sides = quads.amax(dim=1) - quads.amin(dim=1)  # (n, 2)
        return float(sides.prod(dim=1).mean())

    assert mean_area(3.0) < 0.7 * mean_area(1.0) and mean_area(0.3) > 1.3 * mean_area(1.0)


def test_augments_are_named_from_a_list_and_change_the_picture(models: ModelCache) -> None:
    assert tiny_settings(augments="Flip, color,none").augments == ["colour", "flip"]
    assert tiny_settings(augments="none").augments == []
    with pytest.raises(SettingsError, match="augments: unknown augmentation 'blur'; choose from"):
        tiny_settings(augments="affine,blur")
    with pytest.raises(SettingsError, match="cut_power: Input should be greater than 0"):
        tiny_settings(cut_power=0)
    today = png_bytes(_run(models).image)
    assert png_bytes(_run(models, augments="affine,erasing,sharpness").image) != today
    assert png_bytes(_run(models, cut_power=3).image) != today


# -- every control through --from, POST /generate and POST /jobs -------------------------------
# Each new field at a value other than its default, as the CLI, a form and the metadata spell it.
CONTROLS: dict[str, Any] = {
    "optimiser": "nadam",
    "learning_rate": 0.05,
    "symmetry": "horizontal",
    "symmetry_weight": 2.0,
    "tile": True,
    "init_noise": "gradient",
    "augments": ["affine", "flip", "noise"],
    "cut_power": 2.5,
    "save_every": 1,
    "stroke_width": [2.0, 6.0],
    "pixel_shape": "hex",
}
CLI = ["generate", "a red circle", "--clip-model", "tiny-random", "--style", "pixel art"]
CLI += ["--size", "32x32", "--cutouts", "4", "--iterations", "2", "--seed", "4"]


def _text(value: Any) -> str:
    """A value as a flag or a form field spells it."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _flags(values: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else [flag, _text(value)]
    return flags


def test_every_control_round_trips_through_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, again = tmp_path / "first.png", tmp_path / "again.png"
    code, _, err = run_cli([*CLI, *_flags(CONTROLS), "--out", str(first)], capsys)
    assert code == 0, err
    stored = read_png_settings(first)
    assert {name: stored[name] for name in CONTROLS} == CONTROLS
    code, _, err = run_cli(["generate", "--from", str(first), "--out", str(again)], capsys)
    assert code == 0, err
    assert again.read_bytes() == first.read_bytes()
    # At their defaults the controls stay out of the metadata (older PNGs read the same).
    plain = tmp_path / "plain.png"
    assert run_cli([*CLI, "--out", str(plain)], capsys)[0] == 0
    assert not set(CONTROLS) - {"learning_rate"} & set(read_png_settings(plain))
    code, _, err = run_cli([*CLI, "--optimiser", "lbfgs", "--out", str(plain)], capsys)
    assert code == 2 and "error: optimiser: unknown value 'lbfgs'; choose one of" in err


def test_every_control_round_trips_through_generate_and_jobs(
    tmp_path: Path, models: ModelCache
) -> None:
    from helpers import job_state, jobs_config, serving, submit, wait_for

    from engine.output import read_png_settings as read_settings

    form = {name: _text(value) for name, value in CONTROLS.items()}
    with serving(jobs_config(tmp_path), models) as client:
        answer = client.post(
            "/generate", data={"prompts": "a castle", "style": "pixel art", "size": "32x32",
                               "iterations": "2", **form},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        header = json.loads(answer.headers["x-settings"])
        assert {name: header[name] for name in CONTROLS} == CONTROLS
        (tmp_path / "sync.png").write_bytes(answer.content)
        stored = read_settings(tmp_path / "sync.png")
        assert {name: stored[name] for name in CONTROLS} == CONTROLS
        assert Settings.create(**stored).optimiser == "nadam"
        job = submit(client, iterations=2, **form)
        done = wait_for(lambda: job_state(client, job["id"], "succeeded"), 120, "the job")
        assert {name: done["settings"][name] for name in CONTROLS} == CONTROLS
        for name, value in [("optimiser", "sgd"), ("symmetry", "radial"), ("init_noise", "x"),
                            ("augments", "blur"), ("cut_power", "0")]:  # fmt: skip
            bad = client.post("/jobs", data={"prompts": "a castle", name: value})
            assert bad.status_code == 422 and name in bad.text, bad.text


# -- image prompt weights --------------------------------------------------------------------------
def test_image_prompt_weights_are_read_like_text_prompt_weights(
    tmp_path: Path, models: ModelCache
) -> None:
    from engine.perceptor import build_targets
    from engine.prompts import parse_image_prompt

    red = tmp_path / "red.png"
    red.write_bytes(png_bytes(size=(32, 32), colour="red"))
    entries = tiny_settings(image_prompts=[f"{red}:1", f"{red}:0.5", f"{red}:-1:0.2"]).image_prompts
    assert entries == [str(red), f"{red}:0.5", f"{red}:-1:0.2"]  # weight 1 is the plain file
    assert tiny_settings(image_prompts=["a:b.png"]).image_prompts == ["a:b.png"]  # not a number
    with pytest.raises(SettingsError, match="image_prompts: a prompt's weight must be between"):
        tiny_settings(image_prompts=[f"{red}:5000"])
    clip = models.clip("tiny-random", torch.device("cpu"))
    image = Image.open(red)
    weights = [parse_image_prompt(entry) for entry in entries]
    targets = build_targets(clip, [], [image] * 3, weights)
    assert targets.weights.tolist() == [1.0, 0.5, -1.0]
    assert targets.stops[2].item() == pytest.approx(0.2)
    pictures = {
        w: png_bytes(_run(models, image_prompts=[f"{red}:{w}"], iterations=3).image)
        for w in ("1", "0.5", "-1")
    }
    assert len(set(pictures.values())) == 3  # the weight changes the picture
    assert pictures["1"] == png_bytes(_run(models, image_prompts=[str(red)], iterations=3).image)


def test_image_prompt_weights_through_the_cli_and_the_form(
    tmp_path: Path, models: ModelCache, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import job_state, jobs_config, serving, wait_for

    red = tmp_path / "red.png"
    red.write_bytes(png_bytes(size=(32, 32), colour="red"))
    first, again = tmp_path / "first.png", tmp_path / "again.png"
    code, _, err = run_cli([*CLI, "--image-prompt", f"{red}:-0.5", "--out", str(first)], capsys)
    assert code == 0, err
    assert read_png_settings(first)["image_prompts"] == [f"{red}:-0.5"]
    assert run_cli(["generate", "--from", str(first), "--out", str(again)], capsys)[0] == 0
    assert again.read_bytes() == first.read_bytes()
    fields = {"prompts": "a castle", "style": "pixel art", "size": "32x32", "iterations": "2"}
    files = [("image_prompts", ("a.png", red.read_bytes(), "image/png"))] * 2
    with serving(jobs_config(tmp_path / "site"), models) as client:
        answer = client.post(
            "/generate", data={**fields, "image_prompt_weights": "0.5, -1:0.2"}, files=files
        )
        assert answer.status_code == 200, answer.text
        stored = json.loads(answer.headers["x-settings"])["image_prompts"]
        assert [entry.rsplit(".png", 1)[1] for entry in stored] == [":0.5", ":-1:0.2"]
        job = client.post("/jobs", data={**fields, "image_prompt_weights": "-2, 3"}, files=files)
        assert job.status_code == 202, job.text
        done = wait_for(lambda: job_state(client, job.json()["id"], "succeeded"), 120, "the job")
        assert [e.rsplit(".png", 1)[1] for e in done["settings"]["image_prompts"]] == [":-2", ":3"]
        for weights, words in [("0.5", "1 weights for 2 image prompts"), ("a, b", "not a weight")]:
            bad = client.post(
                "/jobs", data={**fields, "image_prompt_weights": weights}, files=files
            )
            assert bad.status_code == 422 and "image_prompt_weights" in bad.text, bad.text
            assert words in bad.text


# -- save_every -----------------------------------------------------------------------------------
def test_save_every_keeps_the_picture_every_n_iterations_and_resumes(models: ModelCache) -> None:
    s = resolve(tiny_settings(save_every=10, iterations=30))
    saved: list[tuple[int, bytes]] = []
    whole = generate(s, models=models, on_save=lambda i, p: saved.append((i, png_bytes(p))))
    assert [i for i, _ in saved] == [10, 20, 30]
    assert saved[-1][1] == png_bytes(whole.image)  # the last one is the finished picture
    assert len({data for _, data in saved}) == 3
    again: list[tuple[int, bytes]] = []
    state = _stopped_state(s, models, 15)  # iteration 10 was saved before the stop ...
    generate(s, models=models, resume=state, on_save=lambda i, p: again.append((i, png_bytes(p))))
    assert again == saved[1:]  # ... and the continued run saves the rest, the same pictures
    with pytest.raises(SettingsError, match="save_every: Input should be greater than or equal"):
        tiny_settings(save_every=-1)


def test_save_every_through_the_cli_writes_a_folder_beside_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "city.png"
    args = [*CLI[:-4], "--iterations", "30", "--seed", "4", "--save-every", "10"]
    code, stdout, err = run_cli([*args, "--out", str(out)], capsys)
    assert code == 0, err
    steps = sorted(p.name for p in (tmp_path / "city").iterdir())
    assert steps == ["step-0010.png", "step-0020.png", "step-0030.png"]
    assert "3 pictures, one every 10 iterations" in stdout
    final = Image.open(tmp_path / "city" / "step-0030.png").convert("RGB")
    assert final.tobytes() == Image.open(out).convert("RGB").tobytes()
    assert read_png_settings(out)["save_every"] == 10


def test_save_every_in_a_job_is_listed_served_and_deleted_with_it(
    tmp_path: Path, models: ModelCache
) -> None:
    from helpers import job_state, jobs_config, serving, submit, wait_for

    with serving(jobs_config(tmp_path), models) as client:
        job = submit(client, iterations=30, save_every=10)
        done = wait_for(lambda: job_state(client, job["id"], "succeeded"), 120, "the job")
        steps = done["links"]["steps"]
        assert [url.rsplit("/", 1)[1] for url in steps] == [
            f"{job['id']}-step-{i:04d}.png" for i in (10, 20, 30)
        ]
        for url in steps:
            got = client.get(url)
            assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert done["links"]["variations"] == []  # a step is not a picture of a batch
        token = {"X-Delete-Token": job["delete_token"]}
        assert client.delete(f"/jobs/{job['id']}", headers=token).status_code == 204
        assert all(client.get(url).status_code == 404 for url in steps)
        assert not (tmp_path / "steps" / job["id"]).exists()
        sync = client.post("/generate", data={"prompts": "a castle", "style": "pixel art",
                                              "size": "32x32", "iterations": "4",
                                              "save_every": "2"})  # fmt: skip
        assert sync.status_code == 200, sync.text
        urls = sync.headers["x-step-urls"].split(", ")
        assert [u.rsplit("-", 1)[1] for u in urls] == ["0002.png", "0004.png"]
        assert client.get(urls[0]).status_code == 200


# -- --prompts-file -------------------------------------------------------------------------------
def test_a_prompts_file_makes_one_picture_per_line_and_a_bad_line_does_not_stop_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("a red circle\n\n  a blue square  \na green star | shiny:0.5\n")
    out = tmp_path / "art.png"
    args = [*CLI[:2], "--prompts-file", str(listing), *CLI[2:]]
    code, stdout, err = run_cli([*args[:1], *args[2:], "--out", str(out)], capsys)
    assert code == 0, err
    pictures = [tmp_path / f"art-{k}.png" for k in (1, 2, 3)]
    prompts = [read_png_settings(p)["prompts"] for p in pictures]
    assert prompts == ["a red circle", "a blue square", "a green star | shiny:0.5"]
    assert "made 3 of 3 pictures" in stdout
    assert err.count("100%") == 3  # one progress bar per picture
    assert "[2/3] line 3: a blue square" in err  # numbered by picture, named by line
    # A bad line is reported with its line number; the others are made.
    listing.write_text("a red circle\na cat:1e400\na blue square\n")
    code, stdout, err = run_cli([*args[:1], *args[2:], "--out", str(tmp_path / "b.png")], capsys)
    assert code == 2
    assert "error: line 2: prompts: a prompt's weight must be between" in err
    assert "made 2 of 3 pictures; failed: line 2" in stdout
    assert (tmp_path / "b-1.png").exists() and (tmp_path / "b-3.png").exists()
    assert not (tmp_path / "b-2.png").exists()
    code, _, err = run_cli([*args, "--out", str(out)], capsys)  # a PROMPT as well
    assert code == 2 and "--prompts-file: give no PROMPT" in err
    listing.write_text("\n \n")
    code, _, err = run_cli([*args[:1], *args[2:], "--out", str(out)], capsys)
    assert code == 2 and "has no prompt" in err


# -- stroke_width ---------------------------------------------------------------------------------
def test_stroke_width_bounds_the_painting_s_strokes(models: ModelCache) -> None:
    import re

    def widths(result: Result) -> list[float]:
        assert result.svg is not None
        return [float(w) for w in re.findall(r'stroke-width="([0-9.]+)"', result.svg)]

    painting = {"style": "painting", "strokes": 16, "iterations": 3}
    today = _run(models, **painting)
    assert min(widths(today)) >= 1.0 and max(widths(today)) <= max(1.0, 0.05 * 32)
    thick = _run(models, **painting, stroke_width="6,9")
    assert all(6.0 <= w <= 9.0 for w in widths(thick)) and max(widths(thick)) > 1.6
    assert png_bytes(thick.image) != png_bytes(today.image)
    assert tiny_settings(stroke_width=[2, 8]).stroke_width == (2.0, 8.0)
    for bad, words in [("9,6", "need 0.5 <= MIN <= MAX <= 256"), ("thick", "expected MIN,MAX")]:
        with pytest.raises(SettingsError, match=f"stroke_width: {words}"):
            tiny_settings(stroke_width=bad)


# -- pixel shapes ---------------------------------------------------------------------------------
def test_hex_pixels_shift_every_other_row_by_half_a_cell(models: ModelCache) -> None:
    from engine.drawers.pixel import hex_cells

    cell = 8
    index = hex_cells(4, 5, cell)  # (32, 40)
    assert sorted(set(index.flatten().tolist())) == list(range(20))  # every cell is seen

    def edges(y: int) -> list[int]:
        row = index[y].tolist()
        return [x for x in range(1, len(row)) if row[x] != row[x - 1]]

    assert edges(cell // 2) == [8, 16, 24, 32]  # even rows: square columns
    # Odd rows: half a cell over (their neighbours fill the half cell at the left edge).
    assert [x for x in edges(cell + cell // 2) if x > cell // 2] == [12, 20, 28, 36]
    square = _run(models, pixel_size=(8, 8), iterations=2)
    hexes = _run(models, pixel_size=(8, 8), iterations=2, pixel_shape="hex")
    assert png_bytes(square.image) != png_bytes(hexes.image)
    with pytest.raises(SettingsError, match="pixel_shape: unknown value 'triangle'; choose one"):
        tiny_settings(pixel_shape="triangle")
