"""Prompt strings: "a | b:0.5 | c:-1:0.2" -> weighted prompts with optional stop values, and
story mode: "a forest ^ a fire ^ ashes" -> scenes, each such a string."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Bounds of a prompt's numbers: a weight scales a loss of at most ~5 (a spherical distance), so
# beyond these the loss overflows to infinity and the image goes black.
MAX_WEIGHT = 1000.0
MAX_STOP = 10.0

# A trailing ":number" (optionally twice). Parsed from the right only, so "a photo: at night"
# keeps its colon: only a suffix that is entirely numeric is taken as weight/stop.
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TAIL = re.compile(rf"^(?P<text>.*?)\s*:\s*(?P<a>{_NUM})\s*(?::\s*(?P<b>{_NUM})\s*)?$", re.S)


@dataclass(frozen=True)
class Prompt:
    text: str
    weight: float = 1.0
    # Loss floor: once the distance is below `stop`, this prompt stops pulling (clipit's "stop").
    stop: float = float("-inf")


def parse_prompt(part: str) -> Prompt:
    """'text:weight:stop' -> Prompt, numbers read from the right only."""
    part = part.strip()
    m = _TAIL.match(part)
    if m and m.group("text").strip():
        weight = _bounded(m.group("a"), "weight", MAX_WEIGHT)
        stop = _bounded(m.group("b"), "stop", MAX_STOP) if m.group("b") else float("-inf")
        return Prompt(m.group("text").strip(), weight, stop)
    if not part or (m and not m.group("text").strip()):
        raise ValueError("a prompt is empty; write some text before any ':weight'")
    return Prompt(part)


def _bounded(text: str, what: str, bound: float) -> float:
    """A finite number within [-bound, bound]; ValueError saying which one otherwise."""
    value = float(text)
    if not math.isfinite(value) or abs(value) > bound:
        raise ValueError(f"a prompt's {what} must be between {-bound:g} and {bound:g}, not {text}")
    return value


def parse_image_prompt(entry: str) -> Prompt:
    """'cat.png:0.5:0.2' -> Prompt('cat.png', 0.5, 0.2): an image prompt's file with a weight and
    stop read from the right as a text prompt's ('cat.png' alone has weight 1)."""
    return parse_prompt(entry)


def image_prompt_entry(path: str, weight: float = 1.0, stop: float = float("-inf")) -> str:
    """The canonical spelling of an image prompt: the path, then ':weight' and ':stop' unless
    they are the defaults (so 'cat.png:1' is 'cat.png')."""
    if stop != float("-inf"):
        return f"{path}:{weight:g}:{stop:g}"
    return path if weight == 1.0 else f"{path}:{weight:g}"


SCENE_SEPARATOR = "^"


def split_scenes(text: str) -> list[str]:
    """Story mode: '^' separates scenes, each a prompt string of its own (one scene without)."""
    scenes = [scene.strip() for scene in text.split(SCENE_SEPARATOR)]
    if len(scenes) > 1 and not all(scenes):
        raise ValueError("a scene is empty; write a prompt on each side of every '^'")
    return scenes


def parse_prompts(text: str) -> list[Prompt]:
    """Split on '|' and parse each part; an empty prompt is an error."""
    if not text or not text.strip():
        raise ValueError("the prompt is empty; describe the picture, e.g. 'underwater city'")
    return [parse_prompt(p) for p in text.split("|")]
