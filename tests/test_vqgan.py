"""The taming-compatible VQGAN: official key layout, checkpoint formats, safe unpickling."""

from __future__ import annotations

import builtins
import dataclasses
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import save_file

from engine import vqgan as vq
from engine.catalog import VQGAN_MODELS, vqgan_factor
from engine.catalog import load_vqgan as load_named_vqgan
from engine.checkpoints import Placeholder, RestrictedPickle, read_checkpoint
from engine.vqgan import (
    GUMBEL_F8_8192,
    IMAGENET_F16_16384,
    TINY_CONFIG,
    CheckpointError,
    VQGANConfig,
    build_vqgan,
    load_vqgan,
)

TINY_GUMBEL = dataclasses.replace(TINY_CONFIG, gumbel=True)


def _meta_state(config: VQGANConfig) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return vq.VQGAN(config).state_dict()


def _nearest_code_error(z: torch.Tensor, codebook: torch.Tensor) -> float:
    """Largest distance (max-norm) from a latent vector to its nearest codebook row."""
    rows = z.detach().movedim(1, -1).reshape(-1, codebook.shape[1])  # (N, D)
    return float((rows[:, None] - codebook[None]).abs().amax(-1).amin(1).max())


def _tiny(config: VQGANConfig = TINY_CONFIG, seed: int = 1) -> vq.VQGAN:
    return build_vqgan(config, torch.Generator().manual_seed(seed))


# -- architecture -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "tensors", "params", "shapes"),
    [
        (
            IMAGENET_F16_16384,
            343,
            76_073_859,
            {
                "quantize.embedding.weight": (16384, 256),
                "encoder.conv_in.weight": (128, 3, 3, 3),
                "encoder.down.2.block.0.nin_shortcut.weight": (256, 128, 1, 1),
                "encoder.down.3.downsample.conv.weight": (256, 256, 3, 3),
                "encoder.down.4.attn.1.proj_out.weight": (512, 512, 1, 1),
                "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
                "encoder.norm_out.weight": (512,),
                "encoder.conv_out.weight": (256, 512, 3, 3),
                "quant_conv.weight": (256, 256, 1, 1),
                "post_quant_conv.weight": (256, 256, 1, 1),
                "decoder.conv_in.weight": (512, 256, 3, 3),
                "decoder.up.4.attn.2.k.weight": (512, 512, 1, 1),
                "decoder.up.4.block.0.conv1.weight": (512, 512, 3, 3),
                "decoder.up.3.block.0.nin_shortcut.weight": (256, 512, 1, 1),
                "decoder.up.1.upsample.conv.bias": (128,),
                "decoder.up.0.block.2.norm2.bias": (128,),
                "decoder.conv_out.weight": (3, 128, 3, 3),
            },
        ),
        (
            GUMBEL_F8_8192,
            301,
            68_995_971,
            {
                "quantize.proj.weight": (8192, 256, 1, 1),
                "quantize.proj.bias": (8192,),
                "quantize.embed.weight": (8192, 256),
                "encoder.down.3.attn.1.v.weight": (512, 512, 1, 1),
                "decoder.up.3.attn.2.q.bias": (512,),
                "decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
                "decoder.conv_out.weight": (3, 128, 3, 3),
            },
        ),
    ],
    ids=["imagenet_f16_16384", "gumbel_f8_8192"],
)
def test_official_layout(
    config: VQGANConfig, tensors: int, params: int, shapes: dict[str, tuple[int, ...]]
) -> None:
    state = _meta_state(config)
    assert len(state) == tensors
    assert sum(t.numel() for t in state.values()) == params
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    # No attention outside the configured resolution, no upsampler on the top level.
    assert not any(k.startswith("decoder.up.0.upsample") for k in state)
    assert not any(".attn." in k for k in state if k.startswith(("encoder.down.0", "decoder.up.0")))


def test_factors() -> None:
    assert IMAGENET_F16_16384.factor == 16 and GUMBEL_F8_8192.factor == 8
    assert vqgan_factor("imagenet_f16_16384") == 16
    assert vqgan_factor("openimages_f8_8192") == 8
    assert vqgan_factor("tiny-random") == TINY_CONFIG.factor == 4
    with pytest.raises(ValueError, match="choose one of tiny-random, shapes, imagenet_f16_16384"):
        vqgan_factor("nope")


def test_factors_come_from_the_weights_registry() -> None:
    assert vqgan_factor("imagenet_f16_16384") == 16
    assert vqgan_factor("openimages_f8_8192") == 8
    assert all(vqgan_factor(name) == entry.factor for name, entry in VQGAN_MODELS.items())


def test_encode_decode_shapes() -> None:
    model = _tiny()
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = model.encode(x)
        y = model.decode(z)
    assert z.shape == (2, TINY_CONFIG.embed_dim, 8, 12)
    assert y.shape == (2, 3, 32, 48)
    # Every latent vector is a codebook row.
    assert _nearest_code_error(z, model.codebook) < 1e-6
    assert model.codebook.shape == (TINY_CONFIG.n_embed, TINY_CONFIG.embed_dim)
    with pytest.raises(ValueError, match="multiples of 4"):
        model.encode(torch.zeros(1, 3, 30, 32))


def test_gumbel_encode_is_deterministic_codes() -> None:
    model = _tiny(TINY_GUMBEL)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        a, b = model.encode(x), model.encode(x)
    assert torch.equal(a, b)
    assert _nearest_code_error(a, model.codebook) < 1e-6
    assert model.decode(a).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("config", [TINY_CONFIG, TINY_GUMBEL], ids=["vq", "gumbel"])
def test_checkpointing_gives_identical_outputs_and_gradients(config: VQGANConfig) -> None:
    model = _tiny(config)
    z0 = torch.randn(1, config.embed_dim, 6, 5, generator=torch.Generator().manual_seed(3))
    results = []
    for flag in (False, True):
        z = z0.clone().requires_grad_(True)
        out = model.decode(model.quantize_latent(z), checkpointing=flag)
        out.square().mean().backward()
        assert z.grad is not None
        results.append((out.detach(), z.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    assert results[0][1].abs().sum() > 0


def test_tiny_random_is_seeded_and_leaves_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    a, b = load_named_vqgan("tiny-random"), load_named_vqgan("tiny-random")
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not any(p.requires_grad for p in a.parameters())
    assert not a.training


def test_named_model_goes_through_the_weights_registry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = _tiny(seed=5)
    config, ckpt = _write_config(tmp_path, vq.VQMODEL, TINY_CONFIG), tmp_path / "m.ckpt"
    torch.save({"state_dict": source.state_dict()}, ckpt)
    calls = []

    def vqgan_paths(name: str, *, download: bool = True) -> tuple[Path, Path]:
        calls.append(name)
        return config, ckpt

    import engine.catalog

    monkeypatch.setattr(engine.catalog, "vqgan_paths", vqgan_paths)
    model = load_named_vqgan("wikiart_1024")
    assert calls == ["wikiart_1024"]
    assert torch.equal(model.codebook, source.codebook)


# -- checkpoint files in the official formats ---------------------------------------------


def _write_config(tmp: Path, target: str, config: VQGANConfig, name: str = "model.yaml") -> Path:
    """A yaml laid out like taming's configs/*.yaml."""
    params: dict[str, Any] = {
        "embed_dim": config.embed_dim,
        "n_embed": config.n_embed,
        "monitor": "val/rec_loss",
        "ddconfig": {
            "double_z": False,
            "z_channels": config.z_channels,
            "resolution": config.resolution,
            "in_channels": 3,
            "out_ch": 3,
            "ch": config.ch,
            "ch_mult": list(config.ch_mult),
            "num_res_blocks": config.num_res_blocks,
            "attn_resolutions": list(config.attn_resolutions),
            "dropout": 0.0,
        },
        "lossconfig": {
            "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
            "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 0},
        },
    }
    if target == vq.GUMBELVQ:
        params["kl_weight"] = 1.0e-08
        params["temperature_scheduler_config"] = {
            "target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
            "params": {"warm_up_steps": 0, "max_decay_steps": 1000001},
        }
    if target == vq.NET2NET:
        params = {
            "cond_stage_key": "coord",
            "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT"},
            "first_stage_config": {"target": vq.VQMODEL, "params": params},
            "cond_stage_config": {"target": "taming.modules.misc.coord.CoordStage"},
        }
    doc = {"model": {"base_learning_rate": 4.5e-06, "target": target, "params": params}}
    path = tmp / name
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture
def foreign_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An object of a class from a module that is gone by the time the checkpoint loads."""
    pkg = tmp_path / "fake_lightning_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "callbacks.py").write_text(
        "class ModelCheckpoint:\n"
        "    def __init__(self):\n"
        "        self.best_model_path = 'epoch=3.ckpt'\n"
        "        self.monitor = 'val/rec_loss'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import fake_lightning_pkg.callbacks as mod  # type: ignore[import-not-found]

    callback = mod.ModelCheckpoint()
    yield callback
    for name in ("fake_lightning_pkg", "fake_lightning_pkg.callbacks"):
        sys.modules.pop(name, None)


def _lightning_ckpt(state: dict[str, torch.Tensor], extra: Any) -> dict[str, Any]:
    """A PyTorch-Lightning checkpoint: training state, loss.* weights, foreign objects."""
    g = torch.Generator().manual_seed(9)
    loss_weights = {
        "loss.discriminator.main.0.weight": torch.randn(8, 3, 4, 4, generator=g),
        "loss.perceptual_loss.net.slice1.0.weight": torch.randn(4, 3, 3, 3, generator=g),
        "loss.logvar": torch.zeros(()),
    }
    return {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "1.0.8",
        "callbacks": {type(extra): extra},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6, "params": [0, 1]}]}],
        "lr_schedulers": [],
        "state_dict": {**state, **loss_weights},
    }


def _save_ckpt_without_foreign_module(obj: Any, path: Path) -> None:
    torch.save(obj, path)
    for name in [n for n in sys.modules if n.startswith("fake_lightning_pkg")]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not (Path(p) / "fake_lightning_pkg").exists()]


def _assert_same_model(a: vq.VQGAN, b: vq.VQGAN) -> None:
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    z = torch.randn(1, a.config.embed_dim, 3, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a.decode(a.quantize_latent(z)), b.decode(b.quantize_latent(z)))


def test_lightning_checkpoint_with_foreign_objects_loads(
    tmp_path: Path, foreign_object: Any
) -> None:
    source = _tiny()
    ckpt = tmp_path / "last.ckpt"
    _save_ckpt_without_foreign_module(_lightning_ckpt(source.state_dict(), foreign_object), ckpt)
    with pytest.raises(ModuleNotFoundError):
        __import__("fake_lightning_pkg")  # really not importable any more
    # torch's own safe mode refuses such a file: why engine.checkpoints has its own unpickler.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, weights_only=True)
    model = load_vqgan(_write_config(tmp_path, vq.VQMODEL, TINY_CONFIG), ckpt)
    _assert_same_model(model, source)
    assert "fake_lightning_pkg" not in sys.modules
    # The foreign callback came back as an inert placeholder holding its state.
    raw = read_checkpoint(ckpt)
    (cls,) = raw["callbacks"]
    assert issubclass(cls, Placeholder) and cls.module == "fake_lightning_pkg.callbacks"
    assert raw["callbacks"][cls].state == {
        "best_model_path": "epoch=3.ckpt",
        "monitor": "val/rec_loss",
    }


def test_net2net_checkpoint_uses_first_stage_model(tmp_path: Path) -> None:
    source = _tiny(seed=2)
    state = {f"first_stage_model.{k}": v for k, v in source.state_dict().items()}
    state["transformer.tok_emb.weight"] = torch.zeros(5, 4)
    state["cond_stage_model.embedding.weight"] = torch.zeros(5, 4)
    ckpt = tmp_path / "net2net.ckpt"
    torch.save({"epoch": 1, "state_dict": state}, ckpt)
    model = load_vqgan(_write_config(tmp_path, vq.NET2NET, TINY_CONFIG), ckpt)
    _assert_same_model(model, source)


def test_gumbel_checkpoint_loads(tmp_path: Path) -> None:
    source = _tiny(TINY_GUMBEL, seed=3)
    ckpt = tmp_path / "gumbel.ckpt"
    torch.save({"state_dict": source.state_dict()}, ckpt)
    model = load_vqgan(_write_config(tmp_path, vq.GUMBELVQ, TINY_CONFIG), ckpt)
    assert model.config.gumbel and "quantize.proj.weight" in model.state_dict()
    _assert_same_model(model, source)


@pytest.mark.parametrize("fmt", ["safetensors", "plain", "legacy"])
def test_other_checkpoint_formats_load(tmp_path: Path, fmt: str) -> None:
    source = _tiny(seed=4)
    state = source.state_dict()
    if fmt == "safetensors":
        ckpt = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt))
    else:
        ckpt = tmp_path / "model.pt"
        torch.save(state, ckpt, _use_new_zipfile_serialization=fmt == "plain")
    _assert_same_model(load_vqgan(_write_config(tmp_path, vq.VQMODEL, TINY_CONFIG), ckpt), source)


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = dict(_tiny().state_dict())
    del state["decoder.conv_out.bias"]
    state["decoder.extra.weight"] = torch.zeros(1)
    state["quant_conv.weight"] = torch.zeros(3, 3, 1, 1)
    ckpt = tmp_path / "bad.ckpt"
    torch.save({"state_dict": state}, ckpt)
    with pytest.raises(CheckpointError) as info:
        load_vqgan(_write_config(tmp_path, vq.VQMODEL, TINY_CONFIG), ckpt)
    msg = str(info.value)
    assert "missing keys (1): decoder.conv_out.bias" in msg
    assert "unexpected keys (1): decoder.extra.weight" in msg
    assert "quant_conv.weight (3, 3, 1, 1) (expected (8, 8, 1, 1))" in msg


def test_gumbel_config_with_plain_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "vq.ckpt"
    torch.save({"state_dict": _tiny().state_dict()}, ckpt)
    with pytest.raises(CheckpointError, match="missing keys \\(3\\): quantize.embed.weight"):
        load_vqgan(_write_config(tmp_path, vq.GUMBELVQ, TINY_CONFIG), ckpt)


def test_html_page_and_bad_config_are_refused(tmp_path: Path) -> None:
    page = tmp_path / "model.ckpt"
    page.write_text("<!DOCTYPE html><html><body>Not Found</body></html>")
    config = _write_config(tmp_path, vq.VQMODEL, TINY_CONFIG)
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_vqgan(config, page)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"model": {"target": "ldm.models.autoencoder.VQModel"}}))
    with pytest.raises(CheckpointError, match="'ldm.models.autoencoder.VQModel' is not supported"):
        load_vqgan(other, page)
    with pytest.raises(CheckpointError, match="not a taming-transformers model config"):
        load_vqgan(page, page)
    script = tmp_path / "script.pt"  # laid out like torch.jit.save's archives
    with zipfile.ZipFile(script, "w") as archive:
        for name in ("data.pkl", "constants.pkl", "code/__torch__.py"):
            archive.writestr(f"script/{name}", b"")
    with pytest.raises(CheckpointError, match="a TorchScript archive, not a checkpoint"):
        load_vqgan(config, script)


# -- malicious pickles --------------------------------------------------------------------


class _Evil:
    """Pickles as a call to `func(*args)`."""

    def __init__(self, func: Any, *args: Any):
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _attacks(marker: Path) -> dict[str, _Evil]:
    write = f"open({str(marker)!r}, 'w').write('pwned')"
    return {
        "os.system": _Evil(os.system, f"touch {marker}"),
        "eval": _Evil(builtins.eval, write),
        "exec": _Evil(builtins.exec, write),
        "subprocess": _Evil(subprocess.call, ["touch", str(marker)]),
        "__import__": _Evil(builtins.__import__, "antigravity"),
    }


@pytest.mark.parametrize("attack", ["os.system", "eval", "exec", "subprocess", "__import__"])
def test_pickled_calls_outside_the_allow_list_never_run(tmp_path: Path, attack: str) -> None:
    marker = tmp_path / f"pwned-{attack}"
    source = _tiny()
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": source.state_dict(), "hparams": _attacks(marker)[attack]}, ckpt)
    model = load_vqgan(_write_config(tmp_path, vq.VQMODEL, TINY_CONFIG), ckpt)
    assert not marker.exists()
    assert "antigravity" not in sys.modules
    _assert_same_model(model, source)
    # The call became an inert placeholder that recorded its arguments.
    stand_in = read_checkpoint(ckpt)["hparams"]
    assert isinstance(stand_in, Placeholder) and not marker.exists()


def test_restricted_unpickler_allow_list() -> None:
    find = RestrictedPickle.Unpickler.find_class
    unpickler = RestrictedPickle.Unpickler(__import__("io").BytesIO(b""))
    refused = [
        ("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "getattr"),
        ("builtins", "__import__"), ("torch.hub", "load"), ("torch", "load"),
        ("subprocess", "Popen"),
    ]  # fmt: skip
    for module, name in refused:
        assert issubclass(find(unpickler, module, name), Placeholder), (module, name)
    assert find(unpickler, "collections", "OrderedDict") is __import__("collections").OrderedDict
    assert find(unpickler, "torch._utils", "_rebuild_tensor_v2") is torch._utils._rebuild_tensor_v2
    assert find(unpickler, "torch", "float16") is torch.float16
    data = pickle.dumps({"a": _Evil(os.system, "true"), "b": [1, 2.5, "x", b"y"]}, protocol=2)
    loaded = RestrictedPickle.loads(data)
    assert isinstance(loaded["a"], Placeholder) and loaded["a"].args == ("true",)
    assert loaded["b"] == [1, 2.5, "x", b"y"]


# -- CUDA ---------------------------------------------------------------------------------


def _decode_peak_mib(model: vq.VQGAN, z: torch.Tensor, checkpointing: bool) -> float:
    """Peak CUDA memory of one decode forward + backward to the latent."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    z = z.clone().requires_grad_(True)
    model.decode(model.quantize_latent(z), checkpointing=checkpointing).square().mean().backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_checkpointing_saves_memory() -> None:
    cpu, gpu = _tiny(seed=6), build_vqgan(TINY_CONFIG, torch.Generator().manual_seed(6), "cuda")
    assert all(torch.equal(v, gpu.state_dict()[k].cpu()) for k, v in cpu.state_dict().items())
    z = torch.randn(1, TINY_CONFIG.embed_dim, 8, 8, generator=torch.Generator().manual_seed(0))
    # cuDNN convolutions use TF32 by default: compare in full float32.
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        torch.testing.assert_close(gpu.decode(z.cuda()).cpu(), cpu.decode(z), atol=1e-4, rtol=1e-4)
    big = build_vqgan(IMAGENET_F16_16384, torch.Generator().manual_seed(0), "cuda")
    zq = big.codebook[torch.randint(16384, (22 * 40,), device="cuda")].T.reshape(1, 256, 22, 40)
    plain, saved = _decode_peak_mib(big, zq, False), _decode_peak_mib(big, zq, True)
    assert saved < 0.6 * plain, (saved, plain)
