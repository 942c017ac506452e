"""Image: a VQGAN latent decoded to pixels (VQGAN+CLIP, Crowson 2021; clipit's default style)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from engine import presets
from engine.camera import Camera
from engine.catalog import vqgan_factor
from engine.drawers.base import AskedSettings, Drawer, DrawerContext
from engine.errors import SettingsError
from engine.models import ModelCache
from engine.vqgan import VQGAN

# Decoder checkpointing is switched on automatically from this many pixels (best quality's
# widescreen 640x352) up: there the decoder's full-resolution activations dominate the memory of
# a step, and recomputing them costs about one more decoder forward per step.
CHECKPOINT_MIN_PIXELS = 640 * 352


class _ClampST(torch.autograd.Function):
    """Clamp to [0, 1]; the gradient passes wherever a descent step moves the value back inward.

    As in the VQGAN+CLIP notebooks' ClampWithGrad: a plain clamp would zero the gradient of every
    saturated pixel, so it could never come back.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        # Inside the range x - clamp(x) is 0: always passes. Outside, only toward the range.
        return grad * (grad * (x - x.clamp(0.0, 1.0)) >= 0)


def clamp_st(x: torch.Tensor) -> torch.Tensor:
    """`x.clamp(0, 1)` whose gradient still pulls out-of-range values back."""
    out: torch.Tensor = _ClampST.apply(x)
    return out


class ImageDrawer(Drawer):
    """A VQGAN latent decoded to a picture (VQGAN+CLIP): a (1, embed_dim, H/f, W/f) latent,
    quantised and decoded each render (clipit)."""

    name: ClassVar[str] = "image"
    aliases: ClassVar[tuple[str, ...]] = ("vqgan",)
    medium: ClassVar[str] = "VQGAN"
    summary: ClassVar[str] = "VQGAN, photo-like"
    icon: ClassVar[str] = (
        '<rect x="3" y="4" width="18" height="16" rx="3"/><circle cx="9" cy="10" r="2"/>'
        '<path d="M3 17l5-5 4 4 3-3 6 6"/>'
    )
    default_lr: ClassVar[float] = 0.2  # clipit's default for VQGAN latents
    uses_vqgan: ClassVar[bool] = True
    decides: ClassVar[tuple[str, ...]] = ("decoder_checkpointing",)

    @classmethod
    def resolve(cls, settings: AskedSettings, size: tuple[int, int]) -> dict[str, Any]:
        """Trim the size to a multiple of the VQGAN's f; decide decoder checkpointing."""
        try:
            f = vqgan_factor(settings.vqgan_model)
        except ValueError as exc:
            raise SettingsError("vqgan_model", str(exc)) from None
        size = presets.trim(size, f)
        checkpointing = settings.decoder_checkpointing
        if checkpointing is None:
            checkpointing = size[0] * size[1] >= CHECKPOINT_MIN_PIXELS
        return {
            "size": size,
            "learning_rate": settings.learning_rate or cls.default_lr,
            "decoder_checkpointing": checkpointing,
        }

    def __init__(self, ctx: DrawerContext):
        super().__init__(ctx)
        models = ctx.models if ctx.models is not None else ModelCache()
        self.vqgan: VQGAN = models.vqgan(ctx.settings.vqgan_model, ctx.device)
        self.checkpointing = bool(ctx.settings.decoder_checkpointing)
        codebook = self.vqgan.codebook.detach()  # (n_embed, D)
        # Per-channel range of the codebook: the latent is kept inside it (clipit).
        self.z_min = codebook.min(0).values.view(1, -1, 1, 1)
        self.z_max = codebook.max(0).values.view(1, -1, 1, 1)
        self.z = self._start_latent(ctx).requires_grad_(True)  # (1, D, H/f, W/f)

    @torch.no_grad()
    def _start_latent(self, ctx: DrawerContext) -> torch.Tensor:
        f = self.vqgan.f
        assert self.width % f == 0 and self.height % f == 0, "size not resolved by ImageDrawer"
        if ctx.init_image is not None:
            return self.vqgan.encode(ctx.init_image.to(ctx.device) * 2 - 1).detach().clone()
        noise = self.start_noise((self.width, self.height))
        if noise is not None:  # encoded into the latent, as nerdyrodent's `-in pixels|gradient`
            return self.vqgan.encode(noise.to(ctx.device) * 2 - 1).detach().clone()
        rows, cols = self.height // f, self.width // f
        codebook = self.vqgan.codebook.detach()
        # Drawn on the CPU generator, so a seed gives the same start on every device.
        idx = torch.randint(codebook.shape[0], (rows * cols,), generator=ctx.generator)
        return codebook[idx.to(codebook.device)].T.reshape(1, -1, rows, cols).clone()

    def parameters(self) -> list[dict[str, Any]]:
        return [{"params": [self.z], "lr": self.ctx.settings.learning_rate}]

    def render(self) -> torch.Tensor:
        z_q = self.vqgan.quantize_latent(self.z)  # (1, D, H/f, W/f), straight-through
        out = self.vqgan.decode(z_q, checkpointing=self.checkpointing)  # (1, 3, H, W) ~[-1, 1]
        return clamp_st((out + 1) / 2)

    def modules(self) -> list[torch.nn.Module]:
        return [self.vqgan]

    @torch.no_grad()
    def clamp_(self) -> None:
        self.z.copy_(torch.maximum(torch.minimum(self.z, self.z_max), self.z_min))

    @torch.no_grad()
    def warp(self, camera: Camera) -> None:
        """Decode, move the picture, encode it back into the latent (as the peers do)."""
        moved = camera.warp(self.render())
        self.z.copy_(self.vqgan.encode(moved * 2 - 1))
        self.clamp_()
