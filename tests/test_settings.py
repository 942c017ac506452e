import pytest

from engine import Limits, Settings, SettingsError, resolve
from engine.presets import ASPECT, QUALITY
from engine.resolve import ResolvedSettings

PIXEL = {"style": "pixel art"}


@pytest.mark.parametrize(
    ("spelling", "style"),
    [
        ("image", "image"),
        ("Image", "image"),
        ("VQGAN", "image"),
        ("painting", "painting"),
        ("Painting", "painting"),
        ("clipdraw", "painting"),
        ("pixel art", "pixel art"),
        ("Pixel Art", "pixel art"),
        ("PIXEL ART", "pixel art"),
        ("pixel_art", "pixel art"),
        ("pixeldraw", "pixel art"),
        ("pixel", "pixel art"),
    ],
)
def test_style_spellings(spelling: str, style: str) -> None:
    assert Settings.create(style=spelling).style == style


def test_unknown_style_names_the_field_and_choices() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.create(style="watercolour")
    assert err.value.field == "style"
    assert "'image', 'painting', 'pixel art'" in err.value.message


@pytest.mark.parametrize(
    ("values", "field", "needle"),
    [
        ({"quality": "ultra"}, "quality", "draft, normal, better, best"),
        ({"aspect": "round"}, "aspect", "widescreen, portrait, square"),
        ({"iterations": 0}, "iterations", "greater than or equal to 1"),
        ({"scale": 0}, "scale", "greater than 0"),
        ({"size": "big"}, "size", "WIDTHxHEIGHT"),
        ({"size": "4x4"}, "size", "at least 8"),
        ({"prompts": ""}, "prompts", "empty"),
        ({"prompts": "a | | b"}, "prompts", "empty"),
        ({"palette": "nope"}, "palette", "pico8"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"colour": "red"}, "colour", "unknown option"),
    ],
)
def test_invalid_values_name_the_field(values: dict, field: str, needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.create(**values)
    assert err.value.field == field
    assert needle in err.value.message
    assert str(err.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("values", "field", "needle"),
    [
        ({"iterations": 10**9}, "iterations", "between 1 and 5000"),
        ({"cutouts": 129}, "cutouts", "between 1 and 128"),
        ({"size": (2048, 1024)}, "size", "at most 1048576"),
        ({"scale": 9}, "scale", "at most 8"),
        ({"prompts": "x" * 1001}, "prompts", "at most 1000"),
        ({"prompts": "|".join("abcdefghi")}, "prompts", "at most 8"),
    ],
)
def test_limits_checked_at_resolve(values: dict, field: str, needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        resolve(Settings.create(**PIXEL, **values))
    assert err.value.field == field
    assert needle in err.value.message


def test_limits_are_configurable() -> None:
    s = Settings.create(**PIXEL, iterations=50)
    with pytest.raises(SettingsError, match="between 1 and 20"):
        resolve(s, Limits(max_iterations=20))
    assert resolve(s, Limits(max_iterations=50)).iterations == 50


def test_resolve_fills_presets_and_draws_a_seed() -> None:
    r = resolve(Settings.create(**PIXEL, quality="normal"))
    assert r.iterations == QUALITY["normal"].iterations == 350
    assert r.clip_models == ["ViT-B/32", "ViT-B/16"]
    assert r.cutouts == 40
    assert r.scale == 2.0
    assert isinstance(r.seed, int)
    assert resolve(r) == r  # resolving twice changes nothing


def test_explicit_values_win() -> None:
    r = Settings.create(**PIXEL, iterations=7, seed=3, cutouts=5, clip_models="RN50, ViT-B/16")
    r = resolve(r)
    assert (r.iterations, r.seed, r.cutouts) == (7, 3, 5)
    assert r.clip_models == ["RN50", "ViT-B/16"]


@pytest.mark.parametrize("quality", list(QUALITY))
@pytest.mark.parametrize("aspect", list(ASPECT))
def test_pixel_size_for_every_aspect_and_quality(quality: str, aspect: str) -> None:
    r = resolve(Settings.create(**PIXEL, quality=quality, aspect=aspect))
    base_w, base_h = ASPECT[aspect]
    scale = QUALITY[quality].scale
    w, h = r.size
    cols, rows = r.pixel_size
    # Whole square cells, within one cell of the preset size, never larger.
    assert w % cols == 0 and h % rows == 0 and w // cols == h // rows
    cell = w // cols
    assert base_w * scale - cell < w <= base_w * scale
    assert base_h * scale - cell < h <= base_h * scale
    # Orientation is kept: portrait stays portrait, widescreen stays wide.
    assert (w > h) == (base_w > base_h) and (w < h) == (base_w < base_h)


def test_widescreen_grid_matches_pixeldraw() -> None:
    r = resolve(Settings.create(**PIXEL, aspect="widescreen", scale=2.5))
    assert r.pixel_size == (80, 45) and r.size == (400, 225)


def test_explicit_size_and_grid() -> None:
    r = resolve(Settings.create(**PIXEL, size="64x48", pixel_size="16x12"))
    assert r.size == (64, 48) and r.pixel_size == (16, 12)
    r = resolve(Settings.create(**PIXEL, size=(100, 60)))
    assert r.size[0] <= 100 and r.size[1] <= 60


def test_settings_json_round_trip() -> None:
    r = resolve(Settings.create(**PIXEL, seed=1, palette="pico8"))
    again = Settings.create(**r.to_json_dict())
    assert again.model_dump() == r.model_dump()
    assert resolve(again) == r


def test_shapes_model_alone_takes_the_shapes_world_defaults() -> None:
    pixel = resolve(Settings.create(prompts="a red circle", clip_models=["shapes"], **PIXEL))
    assert (pixel.size, pixel.pixel_size) == ((64, 64), (16, 16))
    assert (pixel.iterations, pixel.cutouts) == (100, 16)
    painting = resolve(Settings.create(clip_models=["shapes"], style="painting"))
    assert (painting.size, painting.strokes, painting.vqgan_model) == ((64, 64), 256, "shapes")
    assert painting.pixel_size is None  # a pixel grid means nothing to the painting style
    # Flat colour fields must form in 100 iterations: faster steps than the styles' defaults.
    assert (pixel.learning_rate, painting.learning_rate) == (0.1, 2.0)
    image = resolve(Settings.create(clip_models=["shapes"], style="image"))
    assert image.learning_rate == 0.2  # the image style's own default
    given = resolve(Settings.create(clip_models=["shapes"], learning_rate=0.5, **PIXEL))
    assert given.learning_rate == 0.5


def test_shapes_world_defaults_never_override_what_was_given() -> None:
    s = resolve(
        Settings.create(clip_models=["shapes"], iterations=7, cutouts=5, pixel_size=(8, 8), **PIXEL)
    )
    assert (s.iterations, s.cutouts, s.pixel_size) == (7, 5, (8, 8))
    strokes = resolve(Settings.create(clip_models=["shapes"], style="painting", strokes=1024))
    assert strokes.strokes == 1024  # given, even though it equals the usual default
    best = resolve(Settings.create(clip_models=["shapes"], quality="best", **PIXEL))
    # A quality above draft keeps its iterations; the canvas stays the world's.
    assert (best.iterations, best.size) == (QUALITY["best"].iterations, (64, 64))
    sized = resolve(Settings.create(clip_models=["shapes"], size=(96, 48), style="painting"))
    assert sized.size == (96, 48)
    # The service passes the form's aspect and scale even when left at their defaults.
    form = Settings.create(clip_models=["shapes"], aspect="square", scale=None, **PIXEL)
    assert resolve(form).size == (64, 64)


def test_other_models_keep_the_quality_presets() -> None:
    for models in (["tiny-random"], ["shapes", "tiny-random"]):
        s = resolve(Settings.create(clip_models=models, **PIXEL))
        assert s.iterations == QUALITY["draft"].iterations and s.cutouts == 40
        assert s.size != (64, 64)


def test_service_defaults_sit_between_the_model_world_and_the_presets() -> None:
    card = {"scale": 2.5}
    # A plain run takes the service's default scale over the quality's...
    plain = resolve(Settings.create(**PIXEL), defaults=card)
    assert plain.scale == 2.5 and plain.size == (369, 369)
    # ...but the shapes world's own size wins over it (the service used to render 369x369)...
    shapes = resolve(Settings.create(clip_models=["shapes"], **PIXEL), defaults=card)
    assert (shapes.size, shapes.pixel_size, shapes.iterations) == ((64, 64), (16, 16), 100)
    # ...and what the caller gives wins over both: a scale multiplies the world's canvas.
    given = resolve(Settings.create(clip_models=["shapes"], scale=2.0, **PIXEL), defaults=card)
    assert (given.scale, given.size, given.pixel_size) == (2.0, (128, 128), (16, 16))


# What `-d aspect=widescreen` on the shapes server made before: 400x224, a 21-minute run.
WORLD_CANVASES = {
    # aspect: (pixel art size, grid), (painting size), (image size); 64 px on the long side
    "square": ((64, 64), (16, 16)),
    "widescreen": ((64, 36), (16, 9)),
    "portrait": ((52, 64), (13, 16)),
}


@pytest.mark.parametrize("aspect", list(WORLD_CANVASES))
@pytest.mark.parametrize("style", ["pixel art", "painting", "image"])
def test_the_shapes_world_decides_the_canvas_of_every_aspect(aspect: str, style: str) -> None:
    size, grid = WORLD_CANVASES[aspect]
    card = {"scale": 2.5}  # the service's default yields to the world's scale, 1
    asked = Settings.create(clip_models=["shapes"], aspect=aspect, style=style, scale=None)
    r = resolve(asked, defaults=card)
    assert (r.size, r.scale, r.iterations) == (size, 1.0, 100)
    assert r.pixel_size == (grid if style == "pixel art" else None)
    # A scale given multiplies the world's canvas (not the presets' 160x90).
    doubled = resolve(Settings.create(clip_models=["shapes"], aspect=aspect, style=style, scale=2))
    assert doubled.size == (size[0] * 2, size[1] * 2)


def test_models_without_a_canvas_keep_the_preset_aspects() -> None:
    wide = {"aspect": "widescreen", "style": "pixel art"}
    for models in (["tiny-random"], None):
        r = resolve(Settings.create(clip_models=models, **wide), defaults={"scale": 2.5})
        assert (r.size, r.pixel_size, r.scale) == ((400, 225), (80, 45), 2.5)


def test_resolved_settings_have_no_open_values() -> None:
    r = resolve(Settings.create(**PIXEL))
    assert isinstance(r, ResolvedSettings) and isinstance(r, Settings)
    for name in ("iterations", "scale", "size", "seed", "cutouts", "clip_models", "learning_rate"):
        assert getattr(r, name) is not None, name
    with pytest.raises(SettingsError, match="size"):
        ResolvedSettings.create(**{**r.to_json_dict(), "size": None})
