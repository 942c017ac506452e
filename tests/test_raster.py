import math
import xml.etree.ElementTree as ET

import pytest
import torch

from engine.raster import (
    RasterOptions,
    bezier_polyline,
    flat_samples,
    render_strokes,
    strokes_to_svg,
)

SVG = "{http://www.w3.org/2000/svg}"


def _line(x0: float, y0: float, x1: float, y1: float) -> torch.Tensor:
    """A straight one-segment cubic from (x0, y0) to (x1, y1): (1, 4, 2)."""
    t = torch.tensor([0, 1 / 3, 2 / 3, 1], dtype=torch.float64)[:, None]
    return (torch.tensor([x0, y0]) * (1 - t) + torch.tensor([x1, y1]) * t)[None].float()


def _random_strokes(n: int, size: tuple[int, int], seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w, h = size
    start = torch.rand(n, 1, 2, generator=g) * torch.tensor([w, h])
    points = start + torch.randn(n, 10, 2, generator=g).cumsum(1) * 3
    widths = torch.rand(n, generator=g) * 4 + 1
    colours = torch.rand(n, 4, generator=g)
    colours[: n // 4, 3] = 1.0  # some opaque strokes: zero transmittance must be handled
    segments = torch.randint(1, 4, (n,), generator=g)
    return [t.to(dtype) for t in (points, widths, colours)] + [segments]


def _dense_reference(points, widths, colours, size, background, segments):
    """Every pixel against every piece of every stroke, composited one stroke at a time."""
    w, h = size
    poly = bezier_polyline(points, flat_samples(points, RasterOptions().tolerance), segments)
    r = torch.arange(max(w, h), dtype=points.dtype) + 0.5
    ys, xs = torch.meshgrid(r[:h], r[:w], indexing="ij")
    p = torch.stack([xs, ys], -1).view(-1, 1, 2)  # (H*W, 1, 2)
    image = background.clone()
    for n in range(points.shape[0]):
        a, ba = poly[n, :-1][None], (poly[n, 1:] - poly[n, :-1])[None]
        t = (((p - a) * ba).sum(-1) / (ba * ba).sum(-1).clamp_min(1e-12)).clamp(0, 1)
        d = (p - a - t[..., None] * ba).norm(dim=-1).amin(dim=1).view(h, w)
        alpha = colours[n, 3] * (0.5 + widths[n] / 2 - d).clamp(0, 1)
        image = image * (1 - alpha) + alpha * colours[n, :3].view(3, 1, 1)
    return image


def _render_with_grads(fn, params, weight):
    """The image of fn(points, widths, colours) and the gradients of a weighted sum of it."""
    leaves = [t.clone().requires_grad_(True) for t in params]
    image = fn(*leaves)
    (image * weight).sum().backward()
    return [image.detach()] + [t.grad for t in leaves]


@pytest.mark.parametrize("width", [2.0, 6.0])
@pytest.mark.parametrize("end", [(50.0, 20.0), (44.0, 47.0)])
def test_straight_stroke_covers_its_area(width: float, end: tuple[float, float]) -> None:
    # Round caps: a stroke of length L and width w covers L*w plus a disc of diameter w.
    points = _line(10.0, 20.0, *end)
    length = math.dist((10.0, 20.0), end)
    black = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    image = render_strokes(points, torch.tensor([width]), black, (64, 64))
    covered = (1 - image[0]).sum().item()
    expected = length * width + math.pi * (width / 2) ** 2
    assert covered == pytest.approx(expected, rel=0.05)
    assert covered == pytest.approx(expected, rel=0.01)  # in fact much closer than 5%


def test_a_red_stroke_lands_where_its_points_say() -> None:
    points = _line(8.0, 30.0, 40.0, 30.0)
    red = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    image = render_strokes(points, torch.tensor([4.0]), red, (64, 48), (0.2, 0.4, 0.6))
    assert image.shape == (3, 48, 64)
    on_stroke = image[:, 29:31, 10:39]  # rows 29, 30 have centres 29.5, 30.5
    assert torch.allclose(on_stroke, torch.tensor([1.0, 0, 0]).view(3, 1, 1))
    far = torch.cat([image[:, :20].flatten(1), image[:, :, 50:].flatten(1)], dim=1)
    assert torch.allclose(far, torch.tensor([0.2, 0.4, 0.6]).view(3, 1))


def test_later_strokes_are_drawn_over_earlier_ones() -> None:
    points = torch.cat([_line(4.0, 16.0, 28.0, 16.0), _line(16.0, 4.0, 16.0, 28.0)])
    colours = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.5]])
    image = render_strokes(points, torch.tensor([4.0, 4.0]), colours, (32, 32), 1.0)
    # Blue at half opacity over opaque red: (0.5, 0, 0.5); blue alone over white: (0.5, 0.5, 1).
    assert torch.allclose(image[:, 15, 15], torch.tensor([0.5, 0.0, 0.5]))
    assert torch.allclose(image[:, 6, 15], torch.tensor([0.5, 0.5, 1.0]))
    assert torch.allclose(image[:, 15, 6], torch.tensor([1.0, 0.0, 0.0]))


def test_matches_a_dense_reference_image_and_gradients() -> None:
    size = (40, 30)
    points, widths, colours, segments = _random_strokes(24, size, seed=3)
    background = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(4))
    weight = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(5))
    ours = _render_with_grads(
        lambda p, w, c: render_strokes(p, w, c, size, background, segments=segments),
        (points, widths, colours),
        weight,
    )
    ref = _render_with_grads(
        lambda p, w, c: _dense_reference(p, w, c, size, background, segments),
        (points, widths, colours),
        weight,
    )
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert ours[1].abs().sum() > 0  # the points do get a gradient


def test_chunked_and_unchunked_give_the_same_image_and_gradients() -> None:
    size = (50, 40)
    points, widths, colours, segments = _random_strokes(40, size, seed=6)
    weight = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(7))
    results = []
    for opts in [RasterOptions(), RasterOptions(tile=8, max_slots=2000, chunk=20000)]:
        results.append(
            _render_with_grads(
                lambda p, w, c, o=opts: render_strokes(p, w, c, size, segments=segments, options=o),
                (points, widths, colours),
                weight,
            )
        )
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_gradients_match_finite_differences() -> None:
    points, widths, colours, segments = _random_strokes(3, (12, 10), seed=11, dtype=torch.float64)
    points = points * 0.5 + 2  # keep the tiny strokes on the tiny canvas
    widths = widths + 1
    opts = RasterOptions(tile=4)
    weight = torch.rand(3, 10, 12, generator=torch.Generator().manual_seed(12), dtype=torch.float64)

    def fn(p: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return render_strokes(p, w, c, (12, 10), 0.5, segments=segments, options=opts) * weight

    inputs = tuple(t.clone().requires_grad_(True) for t in (points, widths, colours))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def test_strokes_off_the_canvas_or_none_leave_the_background() -> None:
    points = _line(-40.0, -40.0, -20.0, -30.0)
    colours = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    image = render_strokes(points, torch.tensor([3.0]), colours, (20, 16), 0.25)
    assert torch.equal(image, torch.full((3, 16, 20), 0.25))
    empty = render_strokes(torch.zeros(0, 4, 2), torch.zeros(0), torch.zeros(0, 4), (20, 16))
    assert torch.equal(empty, torch.ones(3, 16, 20))


def test_bad_background_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(3, 16, 20\)"):
        render_strokes(
            _line(1, 1, 5, 5), torch.ones(1), torch.ones(1, 4), (20, 16), torch.ones(3, 8, 8)
        )


def test_bezier_polyline_ends_and_midpoint_and_unused_segments() -> None:
    points = torch.tensor([[[0.0, 0.0], [0.0, 8.0], [8.0, 8.0], [8.0, 0.0]] + [[9.0, 9.0]] * 3])
    poly = bezier_polyline(points, samples=8, segments=torch.tensor([1]))
    assert poly.shape == (1, 17, 2)
    assert torch.allclose(poly[0, 0], points[0, 0])
    assert torch.allclose(poly[0, 4], torch.tensor([4.0, 6.0]))  # B(1/2) = (P0+3P1+3P2+P3)/8
    assert torch.allclose(poly[0, 8:], points[0, 3].expand(9, 2))  # the unused segment collapses


def test_svg_holds_one_path_per_stroke_with_its_colour_and_width() -> None:
    points, widths, colours, segments = _random_strokes(5, (40, 30), seed=9)
    colours[0] = torch.tensor([1.0, 0.0, 0.0, 0.25])
    doc = strokes_to_svg(points, widths, colours, (40, 30), segments=segments)
    root = ET.fromstring(doc)
    assert (root.get("width"), root.get("height"), root.get("viewBox")) == ("40", "30", "0 0 40 30")
    assert root.find(f"{SVG}rect").get("fill") == "rgb(255,255,255)"
    paths = root.findall(f"{SVG}path")
    assert len(paths) == 5
    first = paths[0]
    assert first.get("stroke") == "rgb(255,0,0)"
    assert float(first.get("stroke-opacity")) == pytest.approx(0.25)
    assert first.get("stroke-linecap") == first.get("stroke-linejoin") == "round"
    assert first.get("fill") == "none"
    for path, width, n in zip(paths, widths.tolist(), segments.tolist(), strict=True):
        assert float(path.get("stroke-width")) == pytest.approx(width, abs=1e-3)
        d = path.get("d")
        assert d.startswith("M ") and d.count("C ") == n
    x0, y0 = (float(v) for v in first.get("d").split()[1:3])
    assert (x0, y0) == pytest.approx(points[0, 0].tolist(), abs=0.01)


def test_svg_embeds_an_image_background_as_png() -> None:
    bg = torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(1))
    doc = strokes_to_svg(torch.zeros(0, 4, 2), torch.zeros(0), torch.zeros(0, 4), (16, 12), bg)
    image = ET.fromstring(doc).find(f"{SVG}image")
    assert image.get("{http://www.w3.org/1999/xlink}href").startswith("data:image/png;base64,")
    assert (image.get("width"), image.get("height")) == ("16", "12")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    size = (120, 90)
    points, widths, colours, segments = _random_strokes(200, size, seed=2)
    weight = torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(3))
    results = []
    for device in ("cpu", "cuda"):
        moved = [t.to(device) for t in (points, widths, colours, weight)]
        seg = segments.to(device)
        out = _render_with_grads(
            lambda p, w, c, s=seg: render_strokes(p, w, c, size, segments=s), moved[:3], moved[3]
        )
        results.append([t.cpu() for t in out])
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)
