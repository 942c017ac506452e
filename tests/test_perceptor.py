import pytest
import torch
from helpers import writing_torchscript
from safetensors.torch import save_file

from engine.catalog import load_clip
from engine.checkpoints import read_state_dict
from engine.perceptor import (
    ClipModel,
    _tiny_clip,
    build_targets,
    load_weights_file,
    spherical_distance,
)
from engine.prompts import parse_prompts


@pytest.fixture(scope="module")
def tiny() -> ClipModel:
    return load_clip("tiny-random")


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in _tiny_clip().state_dict().items()}


def _scripted_archive(state: dict[str, torch.Tensor], path) -> None:
    """A TorchScript archive with the same keys, like OpenAI's published .pt files."""
    root = torch.nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        mod = root
        for p in parents:
            if not hasattr(mod, p):
                mod.add_module(p, torch.nn.Module())
            mod = getattr(mod, p)
        mod.register_buffer(leaf, value)
    # OpenAI's archives also carry these as tensors; they are not weights.
    root.register_buffer("input_resolution", torch.tensor(224))
    root.register_buffer("context_length", torch.tensor(77))
    root.register_buffer("vocab_size", torch.tensor(49408))
    with writing_torchscript():  # OpenAI's format, which torch deprecates
        torch.jit.save(torch.jit.script(root), str(path))


def _perturbed(state):
    return {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}


@pytest.mark.filterwarnings("error::FutureWarning")  # no deprecation notice goes unseen
@pytest.mark.parametrize("fmt", ["torchscript", "state_dict", "lightning", "module", "safetensors"])
def test_load_each_weights_format(fmt: str, state, tmp_path) -> None:
    want = _perturbed(state)
    if fmt == "torchscript":
        path = tmp_path / "ViT-tiny.pt"
        _scripted_archive(want, path)
    elif fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in want.items()}, str(path))
    else:
        path = tmp_path / "w.bin"
        obj: dict = want
        if fmt == "lightning":
            obj = {"state_dict": want, "epoch": 3}
        elif fmt == "module":
            obj = {f"module.{k}": v for k, v in want.items()}
        torch.save(obj, path)
    model = _tiny_clip()
    load_weights_file(model, path)
    got = model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_mismatched_weights_name_the_keys(state, tmp_path) -> None:
    broken = dict(state)
    broken.pop("visual.proj")
    broken["extra.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"missing keys \['visual.proj'\].*unexpected.*extra"):
        load_weights_file(_tiny_clip(), tmp_path / "w.pt")


def test_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        read_state_dict(tmp_path / "nope.pt")


def test_arch_equals_path_loads_a_full_architecture_file(tmp_path) -> None:
    # 'NAME=/path' builds NAME and loads the file: a wrong-architecture file is refused clearly.
    torch.save(_tiny_clip().state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="does not fit this CLIP architecture"):
        load_clip(f"RN50={tmp_path / 'tiny.pt'}")


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("ViT-Z/99", "choose one of ViT-B/32, ViT-B/16"),
        ("ViT-B/32:fast", "NAME:random"),
        ("tiny-random=/x.pt", "takes no weights file"),
    ],
)
def test_bad_model_names(name: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        load_clip(name)


def test_tiny_is_deterministic_and_frozen(tiny: ClipModel) -> None:
    again = load_clip("tiny-random")
    a, b = tiny.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any(p.requires_grad for p in tiny.model.parameters())
    assert tiny.input_size == 32


def test_embeddings_are_unit_norm(tiny: ClipModel) -> None:
    t = tiny.encode_text(["a red circle", "a blue square"])
    i = tiny.encode_image(torch.rand(3, 3, 32, 32))
    assert t.shape == (2, 64) and i.shape == (3, 64)
    assert torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(i.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_spherical_distance_values() -> None:
    x = torch.tensor([[1.0, 0.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    d = spherical_distance(x, y)[0]
    # 2 * (angle / 2) ** 2: 0, pi^2/8, pi^2/2.
    assert torch.allclose(d, torch.tensor([0.0, torch.pi**2 / 8, torch.pi**2 / 2]), atol=1e-5)


def test_weights_signs_and_stops(tiny: ClipModel) -> None:
    image = torch.rand(4, 3, 32, 32)
    emb = tiny.encode_image(image)
    pos = build_targets(tiny, parse_prompts("cat"), []).loss(emb)
    neg = build_targets(tiny, parse_prompts("cat:-1"), []).loss(emb)
    assert torch.allclose(pos, -neg)
    stopped = build_targets(tiny, parse_prompts("cat:1:10"), []).loss(emb)
    assert torch.allclose(stopped, torch.tensor(10.0))  # floored at the stop value
    x = image.clone().requires_grad_(True)
    build_targets(tiny, parse_prompts("cat:1:10"), []).loss(tiny.encode_image(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the floor lets gradients through


def test_bfloat16_autocast_matches_float32(tiny: ClipModel) -> None:
    x = torch.rand(2, 3, 32, 32)
    full = tiny.encode_image(x)  # float32 by default
    tiny.precision = "bfloat16"
    try:
        half = tiny.encode_image(x)
    finally:
        tiny.precision = "float32"
    assert half.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(full, half).min() > 0.99
    assert not torch.equal(full, half)


def test_unknown_precision_is_refused(tiny: ClipModel) -> None:
    tiny.precision = "float8"
    try:
        with pytest.raises(ValueError, match="float32 or bfloat16"):
            tiny.encode_image(torch.rand(1, 3, 32, 32))
    finally:
        tiny.precision = "float32"
