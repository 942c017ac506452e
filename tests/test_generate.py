import threading

import numpy as np
import pytest
import torch
from helpers import png_bytes, tiny_settings
from PIL import Image

from engine import Cancelled, ModelCache, Settings, generate, resolve
from engine.output import read_png_settings, save_png


def test_loss_decreases_over_20_iterations(models: ModelCache) -> None:
    r = generate(tiny_settings(iterations=20, learning_rate=0.05), models=models)
    assert len(r.losses) == 20
    assert sum(r.losses[-5:]) / 5 < sum(r.losses[:5]) / 5
    assert r.image.size == (32, 32)


def test_same_seed_gives_identical_pngs(models: ModelCache, tmp_path) -> None:
    a = generate(tiny_settings(), models=models)
    b = generate(tiny_settings(), models=ModelCache())  # a fresh cache loads the same model
    c = generate(tiny_settings(seed=8), models=models)
    save_png(a.image, a.settings, tmp_path / "a.png")
    save_png(b.image, b.settings, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert png_bytes(a.image) != png_bytes(c.image)


def test_on_step_reports_every_iteration(models: ModelCache) -> None:
    steps = []
    r = generate(tiny_settings(iterations=5), models=models, on_step=steps.append)
    assert [s.iteration for s in steps] == [1, 2, 3, 4, 5]
    assert all(s.total == 5 for s in steps)
    assert [s.loss for s in steps] == r.losses
    assert steps[-1].elapsed >= steps[0].elapsed >= 0
    assert steps[2].image().size == (32, 32)


def test_cancel_stops_within_one_iteration(models: ModelCache) -> None:
    steps = []

    def stop() -> bool:
        return len(steps) >= 3

    with pytest.raises(Cancelled, match="iteration 3 of 50"):
        generate(
            tiny_settings(iterations=50), models=models, on_step=steps.append, should_stop=stop
        )
    assert len(steps) == 3


def test_two_threads_equal_their_solo_runs(models: ModelCache) -> None:
    solo = [
        png_bytes(generate(tiny_settings(seed=s, iterations=6), models=models).image)
        for s in (1, 2)
    ]
    out: dict[int, bytes] = {}

    def run(seed: int) -> None:
        out[seed] = png_bytes(generate(tiny_settings(seed=seed, iterations=6), models=models).image)

    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out[1] == solo[0] and out[2] == solo[1]


def test_result_reports_resolved_settings(models: ModelCache) -> None:
    r = generate(tiny_settings(seed=None), models=models)
    assert isinstance(r.settings.seed, int)
    assert r.settings.pixel_size == (32, 32)
    assert r.settings.learning_rate == 0.03
    assert r.svg is None and r.video_path is None


def test_png_metadata_round_trip(models: ModelCache, tmp_path) -> None:
    r = generate(tiny_settings(prompts="a photo: at night | red:0.5"), models=models)
    path = save_png(r.image, r.settings, tmp_path / "out.png")
    with Image.open(path) as img:
        assert img.text["prompt"] == "a photo: at night | red:0.5"
        assert img.text["seed"] == "7"
        assert img.text["Software"].startswith("text2art ")
    again = Settings.create(**read_png_settings(path))
    assert resolve(again) == r.settings.model_copy(update={"device": None})
    reproduced = generate(again.model_copy(update={"device": "cpu"}), models=models)
    assert png_bytes(reproduced.image) == png_bytes(r.image)


def test_read_png_settings_rejects_foreign_png(tmp_path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    with pytest.raises(ValueError, match="no text2art settings"):
        read_png_settings(tmp_path / "x.png")


def test_init_image_and_image_prompts(models: ModelCache, tmp_path) -> None:
    red = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(red)
    r = generate(
        tiny_settings(init_image=str(red), image_prompts=[str(red)], iterations=1),
        models=models,
    )
    # One small step from a red start stays red-dominant.
    px = np.asarray(r.image).reshape(-1, 3).mean(axis=0)
    assert px[0] > 200 and px[1] < 60 and px[2] < 60


def test_unreadable_init_image_names_the_field(models: ModelCache, tmp_path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    from engine import SettingsError

    with pytest.raises(SettingsError) as err:
        generate(tiny_settings(init_image=str(bad)), models=models)
    assert err.value.field == "init_image"


def test_negative_prompt_and_penalties_run(models: ModelCache) -> None:
    r = generate(
        tiny_settings(prompts="city | blurry:-1", smoothness_weight=1, saturation_weight=1),
        models=models,
    )
    assert len(r.losses) == 4 and all(torch.isfinite(torch.tensor(r.losses)))
