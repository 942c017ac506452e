import math

import pytest

from engine.prompts import Prompt, parse_prompts

INF = -math.inf


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("underwater city", [Prompt("underwater city", 1.0, INF)]),
        ("a | b:0.5 | c:-1:0.2", [Prompt("a"), Prompt("b", 0.5), Prompt("c", -1.0, 0.2)]),
        ("a photo: at night", [Prompt("a photo: at night")]),
        ("a photo: at night:2", [Prompt("a photo: at night", 2.0)]),
        ("time 12:30", [Prompt("time 12", 30.0)]),
        ("  spaced  :  3  ", [Prompt("spaced", 3.0)]),
        ("sci-fi:1e-1", [Prompt("sci-fi", 0.1)]),
        ("x:.5:-.25", [Prompt("x", 0.5, -0.25)]),
        ("ratio 16:9 poster", [Prompt("ratio 16:9 poster")]),
        ("weird:abc", [Prompt("weird:abc")]),
    ],
)
def test_parse_table(text: str, expected: list[Prompt]) -> None:
    assert parse_prompts(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "a | ", "|b", ":0.5", "a | :2"])
def test_empty_prompt_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        parse_prompts(text)


def test_negative_weight_is_kept() -> None:
    (p,) = parse_prompts("watermark:-1")
    assert p.weight == -1.0 and p.text == "watermark"
