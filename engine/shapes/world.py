"""A procedural world of coloured shapes and the grammar of its captions."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 30),
    "green": (40, 180, 60),
    "blue": (30, 80, 220),
    "purple": (130, 40, 170),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "star", "ring", "stripes")
SIZES = ("small", "large")
# Position name -> centre as a fraction of the image side (x, y).
POSITIONS: dict[str, tuple[float, float]] = {
    "centre": (0.5, 0.5),
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
}
# Radius as a fraction of the image side.
RADIUS = {"small": 0.13, "large": 0.22}
# What a caption leaves out is drawn the way a person would draw it, so that a short prompt
# ("a red circle") names one picture, not a spread of them: a large shape in the centre on white
# (on black when a shape is white). Two shapes always have their positions named.
DEFAULT_POSITION, DEFAULT_SIZE = "centre", "large"
DEFAULT_BACKGROUNDS = ("white", "black")


@dataclass(frozen=True)
class Shape:
    """A second shape of a scene (the first one's fields live on `Scene` itself)."""

    shape: str
    colour: str
    position: str
    size: str = "small"


@dataclass(frozen=True)
class Scene:
    """One or two shapes on a plain background; `say_*` choose what the caption names."""

    shape: str
    colour: str
    background: str
    position: str = "centre"
    size: str = "large"
    say_size: bool = True
    say_position: bool = True
    say_background: bool = True
    second: Shape | None = None

    def caption(self) -> str:
        """'a small yellow star at the top left and a red ring at the right on a purple background'
        (size, position and background optional)."""
        words = self._words(self.shape, self.colour, self.position, self.size)
        if self.second is not None:
            s = self.second
            words += ["and", *self._words(s.shape, s.colour, s.position, s.size)]
        if self.say_background:
            words += ["on a", self.background, "background"]
        return " ".join(words)

    def _words(self, shape: str, colour: str, position: str, size: str) -> list[str]:
        words = ([size] if self.say_size else []) + [colour, shape]
        words.insert(0, "an" if words[0][0] in "aeiou" else "a")
        if self.say_position:
            words += ["in the centre"] if position == "centre" else ["at the", position]
        return words

    def shapes(self) -> list[Shape]:
        """Every shape of the scene, the first one first."""
        first = Shape(self.shape, self.colour, self.position, self.size)
        return [first] if self.second is None else [first, self.second]


def apart(a: str, b: str) -> bool:
    """Whether large shapes at positions `a` and `b` cannot overlap (centres >= half a side)."""
    (ax, ay), (bx, by) = POSITIONS[a], POSITIONS[b]
    return math.hypot(ax - bx, ay - by) >= 0.5 - 1e-9


def random_scene(rng: np.random.Generator, mention: float = 0.7, two: float = 0.0) -> Scene:
    """A random scene; each optional attribute is named with probability `mention`, and with
    probability `two` a second shape (another colour, at a position apart) is added."""
    colour = str(rng.choice(list(COLOURS)))
    background = str(rng.choice([c for c in COLOURS if c != colour]))
    scene = Scene(
        shape=str(rng.choice(SHAPES)),
        colour=colour,
        background=background,
        position=str(rng.choice(list(POSITIONS))),
        size=str(rng.choice(SIZES)),
        say_size=bool(rng.random() < mention),
        say_position=bool(rng.random() < mention),
        say_background=bool(rng.random() < mention),
    )
    if rng.random() >= two:
        return scene
    first = str(rng.choice([p for p in POSITIONS if p != "centre"]))
    second = Shape(
        shape=str(rng.choice(SHAPES)),
        colour=str(rng.choice([c for c in COLOURS if c not in (colour, background)])),
        position=str(rng.choice([p for p in POSITIONS if p != "centre" and apart(first, p)])),
        size=str(rng.choice(SIZES)),
    )
    return dataclasses.replace(scene, position=first, second=second)


def with_defaults(scene: Scene) -> Scene:
    """The scene as its caption describes it: every attribute the caption leaves out set to the
    world's default (see DEFAULT_POSITION); a two-shape scene names its positions."""
    update: dict[str, object] = {}
    if scene.second is not None:
        update["say_position"] = True
    elif not scene.say_position:
        update["position"] = DEFAULT_POSITION
    if not scene.say_size:
        update["size"] = DEFAULT_SIZE
        if scene.second is not None:
            update["second"] = dataclasses.replace(scene.second, size=DEFAULT_SIZE)
    if not scene.say_background:
        free = [c for c in DEFAULT_BACKGROUNDS if c not in {t.colour for t in scene.shapes()}]
        if free:
            update["background"] = free[0]
        else:  # a white and a black shape: the background keeps its colour and is named
            update["say_background"] = True
    return dataclasses.replace(scene, **update)  # type: ignore[arg-type]


def captioned_scene(rng: np.random.Generator, mention: float = 0.7, two: float = 0.0) -> Scene:
    """A random scene whose unnamed attributes take the defaults (`with_defaults`): what the
    'shapes' CLIP is trained on."""
    return with_defaults(random_scene(rng, mention, two))


def render(
    scene: Scene, size: int = 64, jitter: float = 0.0, rng: np.random.Generator | None = None
) -> Image.Image:
    """Draw the scene at `size` px (4x supersampled); `jitter` moves each shape by up to that
    fraction of the side."""
    big = size * 4
    img = Image.new("RGB", (big, big), COLOURS[scene.background])
    draw = ImageDraw.Draw(img)
    for thing in scene.shapes():
        fx, fy = POSITIONS[thing.position]
        if jitter and rng is not None:
            fx, fy = fx + rng.uniform(-jitter, jitter), fy + rng.uniform(-jitter, jitter)
        _draw_shape(
            draw,
            thing.shape,
            fx * big,
            fy * big,
            RADIUS[thing.size] * big,
            COLOURS[thing.colour],
            COLOURS[scene.background],
        )
    return img.resize((size, size), Image.Resampling.BOX)


def _draw_shape(
    d: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    fill: tuple[int, int, int],
    bg: tuple[int, int, int],
) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        s = r * 0.85
        d.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        d.polygon(
            [(cx, cy - r), (cx + r * 0.95, cy + r * 0.7), (cx - r * 0.95, cy + r * 0.7)], fill=fill
        )
    elif shape == "star":
        d.polygon(_star_points(cx, cy, r), fill=fill)
    elif shape == "ring":
        d.ellipse(box, fill=fill)
        d.ellipse((cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55), fill=bg)
    elif shape == "stripes":
        n, w = 3, 2 * r / 5  # three vertical bars with two gaps
        for i in range(n):
            x0 = cx - r + 2 * i * w
            d.rectangle((x0, cy - r, x0 + w, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def _star_points(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Five-pointed star: alternate outer and inner (0.4 r) vertices, point up."""
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.4
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def to_array(img: Image.Image) -> np.ndarray:
    """PIL image -> float32 array (3, H, W) in [0, 1]."""
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
