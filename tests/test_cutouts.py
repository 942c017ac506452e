import torch

from engine.cutouts import Cutouts, whole_views


def test_shape_range_and_determinism() -> None:
    img = torch.rand(1, 3, 40, 60)
    c = Cutouts(32, 16)
    a = c(img, torch.Generator().manual_seed(1))
    b = c(img, torch.Generator().manual_seed(1))
    other = c(img, torch.Generator().manual_seed(2))
    assert a.shape == (16, 3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, other)
    assert c.n_whole + c.n_zoom + c.n_wide == 16


def test_gradients_flow_to_the_image() -> None:
    img = torch.rand(1, 3, 40, 60, requires_grad=True)
    Cutouts(32, 8)(img, torch.Generator().manual_seed(0)).mean().backward()
    assert img.grad is not None and (img.grad != 0).float().mean() > 0.5


def test_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Cutouts(16, 8)(torch.rand(1, 3, 20, 20, generator=torch.Generator()), torch.Generator())
    assert torch.equal(torch.rand(3), expected)


def test_portrait_stays_portrait_in_the_whole_view() -> None:
    img = torch.ones(1, 3, 160, 128)  # portrait, all white
    (view,) = whole_views(img, 32, 1)
    columns = view[0].amax(dim=0) > 0.5  # which columns hold image content
    rows = view[0].amax(dim=1) > 0.5
    assert rows.sum() == 32  # full height
    assert 24 <= columns.sum() <= 27  # 32 * 128/160 = 25.6: letterboxed, not squashed


def test_zoom_views_are_crops_of_the_image() -> None:
    # A constant image stays (nearly) constant in every crop before noise is added.
    c = Cutouts(16, 8, noise=0.0)
    out = c(torch.full((1, 3, 50, 50), 0.5), torch.Generator().manual_seed(0))
    zoom = out[c.n_whole : c.n_whole + c.n_zoom]
    assert (zoom - 0.5).abs().max() < 0.05


def test_without_zoom_every_view_shows_both_halves_in_their_own_colours() -> None:
    img = torch.zeros(1, 3, 48, 48)
    img[:, 0, :, :24] = 1.0  # red left half
    img[:, 2, :, 24:] = 1.0  # blue right half
    whole = Cutouts(16, 64, noise=0.0, zoom=False)
    assert whole.n_zoom == 0 and whole.n_whole + whole.n_wide == 64
    views = whole(img, torch.Generator().manual_seed(0))  # (64, 3, 16, 16)
    red = (views[:, 0] > 0.8).flatten(1).any(1)
    blue = (views[:, 2] > 0.8).flatten(1).any(1)
    assert red.all() and blue.all()
    assert views[:, 1].max() < 1e-4  # no hue jitter: nothing turns green
    # Red stays on the left of blue in every view (rotations are at most 15 degrees).
    cols = torch.arange(16.0)
    red_x = ((views[:, 0] > 0.8).float().sum(1) * cols).sum(1) / (views[:, 0] > 0.8).sum((1, 2))
    blue_x = ((views[:, 2] > 0.8).float().sum(1) * cols).sum(1) / (views[:, 2] > 0.8).sum((1, 2))
    assert (red_x < blue_x).all()
    # With zoom, some crops fall inside one half.
    zoomed = Cutouts(16, 64, noise=0.0)(img, torch.Generator().manual_seed(0))
    one_colour = ~((zoomed[:, 0] > 0.8).flatten(1).any(1) & (zoomed[:, 2] > 0.8).flatten(1).any(1))
    assert one_colour.any()


def test_wide_strength_scales_how_far_whole_views_move() -> None:
    img = torch.zeros(1, 3, 64, 64)
    img[:, :, 24:40, 24:40] = 1.0  # a white square in the middle
    still = Cutouts(64, 16, noise=0.0, zoom=False, wide=0.0)(img, torch.Generator())
    assert (still - img).abs().mean() < 0.01  # wide=0: the picture, resampled in place

    def spread(wide: float) -> float:
        views = Cutouts(64, 64, noise=0.0, zoom=False, wide=wide)(img, torch.Generator())
        mass = views[:, 0].sum((1, 2))  # (64,)
        ys = torch.arange(64.0)
        cy = (views[:, 0].sum(2) * ys).sum(1) / mass
        cx = (views[:, 0].sum(1) * ys).sum(1) / mass
        return float(torch.hypot(cx - 31.5, cy - 31.5).mean())  # mean shift of the square

    assert spread(0.0) < 0.5 < spread(0.3) < 0.5 * spread(1.0)
    assert spread(1.0) > 2.0  # clipit's views shift by up to 10% of the side
