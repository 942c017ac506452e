"""What a run optimises: the CLIP loss of each picture against its prompts (a story's current
scene), over augmented cutouts, plus the optional init, smoothness and saturation penalties."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image

from engine.cutouts import Cutouts
from engine.images import open_rgb
from engine.perceptor import ClipModel, Targets, build_targets
from engine.prompts import parse_image_prompt, parse_prompts, split_scenes
from engine.resolve import ResolvedSettings


def _open_image_prompts(entries: list[str]) -> list[Image.Image]:
    return [open_rgb(parse_image_prompt(e).text, "image_prompts") for e in entries]


def _views_key(clip: ClipModel) -> tuple[int, bool, float]:
    """Models that take the same views share one batch of cutouts."""
    return clip.input_size, clip.zoom_views, clip.view_strength


def _nothing() -> None:
    pass


def _then(value: torch.Tensor, check: Callable[[], None]) -> torch.Tensor:
    check()
    return value


class Objective:
    """Everything the loss needs: CLIP models with their targets and cutouts, extra penalties."""

    def __init__(self, s: ResolvedSettings, clips: list[ClipModel], init: torch.Tensor | None):
        images = _open_image_prompts(s.image_prompts)  # every scene's
        weights = [parse_image_prompt(entry) for entry in s.image_prompts]
        self.clips = clips
        # targets[scene][model]: a story's scenes each have their own (one scene without '^').
        self.targets: list[list[Targets]] = [
            [build_targets(c, parse_prompts(scene), images, weights) for c in clips]
            for scene in split_scenes(s.prompts)
        ]
        self.cutouts = {
            _views_key(c): Cutouts(
                c.input_size,
                s.cutouts,
                zoom=c.zoom_views,
                wide=c.view_strength,
                wrap=s.tile,
                augments=s.augments,
                cut_power=s.cut_power,
            )  # fmt: skip
            for c in clips
        }
        self.settings, self.init = s, init

    def __call__(
        self,
        images: list[torch.Tensor],
        gens: list[torch.Generator],
        scene: int = 0,
        check: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """The loss of each picture: (N,).  images: N x (1, 3, H, W), each with its generator;
        `scene`: the story scene whose prompts are the targets.

        Every picture's views go through each CLIP model in one batch; each generator is drawn
        from in the same order as in a solo run (view kinds in order), so picture i sees the
        views the solo run with its seed would. `check()` (a prompt cancel) is called after
        each picture's cutouts and each model's batch.
        """
        check = check or _nothing
        views = {
            key: torch.cat(
                [_then(cut(image, g), check) for image, g in zip(images, gens, strict=True)]
            )
            for key, cut in self.cutouts.items()
        }  # (N*n, 3, S, S) each
        losses = [image.new_zeros(()) for image in images]
        for clip, targets in zip(self.clips, self.targets[scene], strict=True):
            embeds = _then(clip.encode_image(views[_views_key(clip)]), check).chunk(len(images))
            losses = [loss + targets.loss(e) for loss, e in zip(losses, embeds, strict=True)]
        pairs = zip(images, losses, strict=True)
        return torch.stack([self._penalties(image, loss) for image, loss in pairs])

    def _penalties(self, image: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """`loss` plus the optional init, smoothness, symmetry and saturation terms of one
        picture."""
        s = self.settings
        if s.init_weight and self.init is not None:
            loss = loss + s.init_weight * (image - self.init).pow(2).mean()
        if s.smoothness_weight:
            loss = loss + s.smoothness_weight * roughness(image, s.tile)
        if s.symmetry != "none":
            loss = loss + s.symmetry_weight * asymmetry(image, s.symmetry)
        if s.saturation_weight:
            spread = image.amax(dim=1) - image.amin(dim=1)  # (1, H, W)
            loss = loss + s.saturation_weight * spread.pow(2).mean()
        return loss


def roughness(image: torch.Tensor, wrap: bool = False) -> torch.Tensor:
    """Mean difference between neighbouring pixels, across and down; with `wrap` (a tile) the
    last column's neighbour is the first (and the last row's the first row)."""
    if wrap:
        dx = (image - image.roll(1, dims=-1)).abs().mean()
        dy = (image - image.roll(1, dims=-2)).abs().mean()
    else:
        dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
        dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    return dx + dy


# symmetry -> the dimensions of (1, 3, H, W) whose mirror image the picture should equal.
MIRRORS = {"horizontal": (-1,), "vertical": (-2,), "both": (-1, -2)}


def asymmetry(image: torch.Tensor, symmetry: str) -> torch.Tensor:
    """Mean difference between the picture and its mirror image(s) (pixray's symmetry loss):
    'horizontal' mirrors left-right, 'vertical' top-bottom, 'both' adds the two."""
    total = image.new_zeros(())
    for dim in MIRRORS[symmetry]:
        total = total + (image - image.flip(dim)).abs().mean()
    return total
