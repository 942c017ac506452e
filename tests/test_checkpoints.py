"""engine.checkpoints: TorchScript archives read without running them, hostile files refused."""

from __future__ import annotations

import builtins
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from engine.checkpoints import (
    Placeholder,
    RestrictedUnpickler,
    read_checkpoint,
    read_state_dict,
    read_torchscript,
)
from engine.errors import CheckpointError
from engine.perceptor import _tiny_clip, load_weights_file

REFUSAL = "checkpoints may only hold tensors and plain data"


class _Small(nn.Module):
    """Parameters, buffers, nesting and an int buffer: the shapes of a real model's state."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.scale = nn.Parameter(torch.full((), 2.0))
        self.register_buffer("input_resolution", torch.tensor(224))
        self.seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(self.bn(self.lin(x))) * self.scale


class _Typed(nn.Module):
    """Typed attributes (pickled through torch.jit._pickle), a ModuleList, a plain tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.table = {"a": torch.ones(2)}
        self.sizes = [1, 2]
        self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
        self.plain = torch.zeros(3)  # an attribute, not a buffer: not in state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x + self.table["a"] + self.plain.sum() + len(self.sizes)


class _OwnState(nn.Module):
    """Keeps its state through its own __getstate__/__setstate__ (TorchScript runs the latter)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        self.weight = state[0]
        self.training = state[1]
        print("SIDE-EFFECT")


def _openai_layout_clip() -> nn.Module:
    """The tiny open_clip CLIP laid out like OpenAI's archives (ViT-B-32.pt, ...)."""
    model = _tiny_clip().eval()
    # OpenAI's attn_mask is a plain attribute (a traced constant), and the three sizes below
    # are buffers: tensors in the archive's state_dict that perceptor drops.
    mask = model._buffers.pop("attn_mask")
    model.attn_mask = mask
    for name, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        model.__dict__.pop(name, None)
        model.register_buffer(name, torch.tensor(value))
    return model


def _jit_save(make: Callable[[], Any], path: Path, half: bool = False) -> Path:
    with warnings.catch_warnings():  # torch.jit's deprecation and tracing notices
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        module = make()
        torch.jit.save(module.half() if half else module, str(path))
    return path


def _traced(model: nn.Module, *inputs: torch.Tensor) -> Callable[[], Any]:
    return lambda: torch.jit.trace(model.eval(), inputs, check_trace=False)


def _jit_state(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)  # same keys, in state_dict's order
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        assert torch.equal(got[key], value), key
        assert not got[key].requires_grad, key


def _rewrite(src: Path, dst: Path, edit: Callable[[str, bytes], bytes | None]) -> Path:
    """A copy of zip `src` with each entry passed through `edit` (None drops it)."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            data = edit(info.filename, old.read(info))
            if data is not None:
                new.writestr(info, data)
    return dst


@pytest.fixture(scope="module")
def clip_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The OpenAI-layout tiny CLIP, traced and saved in float32 and float16."""
    folder = tmp_path_factory.mktemp("clip")
    model = _openai_layout_clip()
    inputs = torch.randn(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long)
    return {
        dtype: _jit_save(_traced(model, *inputs), folder / f"ViT-{dtype}.pt", dtype == "float16")
        for dtype in ("float32", "float16")
    }


# -- (a) real archives read exactly like torch.jit.load ----------------------------------------


@pytest.mark.parametrize("half", [False, True], ids=["float32", "float16"])
@pytest.mark.parametrize("how", ["trace", "script"])
def test_small_archive_reads_like_jit_load(tmp_path: Path, how: str, half: bool) -> None:
    model = _Small().eval()

    def make() -> Any:
        if how == "trace":
            return torch.jit.trace(model, torch.randn(2, 3), check_trace=False)
        return torch.jit.script(model)

    path = _jit_save(make, tmp_path / "small.pt", half)
    got = read_torchscript(path)
    _assert_same(got, _jit_state(path))
    assert got["seq.2.weight"].dtype == (torch.float16 if half else torch.float32)
    assert "seq.2.bias" not in got and got["input_resolution"].item() == 224


def test_typed_attributes_and_module_lists_read_like_jit_load(tmp_path: Path) -> None:
    path = _jit_save(lambda: torch.jit.script(_Typed()), tmp_path / "typed.pt")
    got = read_torchscript(path)
    _assert_same(got, _jit_state(path))
    assert list(got) == [f"blocks.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_openai_layout_clip_reads_like_jit_load(clip_archives: dict[str, Path], dtype: str) -> None:
    path = clip_archives[dtype]
    got = read_state_dict(path)
    _assert_same(got, _jit_state(path))
    assert {"input_resolution", "context_length", "vocab_size"} <= set(got)
    assert got["visual.conv1.weight"].dtype == getattr(torch, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_openai_layout_clip_loads_into_the_model(
    clip_archives: dict[str, Path], dtype: str
) -> None:
    want = _jit_state(clip_archives[dtype])
    model = _tiny_clip()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    load_weights_file(model, clip_archives[dtype])
    for key, value in model.state_dict().items():
        assert torch.equal(value, want[key].to(value.dtype)), key


# -- (b) a pickle that would run code loads nothing ------------------------------------------


def _global_call(module: str, name: str, arg: str) -> bytes:
    """Pickle opcodes for `module.name(arg)`: GLOBAL, BINUNICODE, TUPLE1, REDUCE."""
    text = arg.encode()
    return (
        b"c"
        + f"{module}\n{name}\n".encode()
        + b"X"
        + len(text).to_bytes(4, "little")
        + text
        + b"\x85R"
    )


def _hostile_archive(path: Path, call: bytes) -> Path:
    """A TorchScript-shaped zip whose module's 'weight' attribute is the pickled call."""
    # GLOBAL __torch__.M, NEWOBJ, {"weight": <call>} (SETITEM), BUILD, STOP
    return _crafted_archive(
        path, b"\x80\x02c__torch__\nM\n)\x81}X\x06\x00\x00\x00weight" + call + b"sb."
    )


def _crafted_archive(path: Path, data: bytes) -> Path:
    """A TorchScript-shaped zip holding `data` as data.pkl and one module class M."""
    code = 'class M(Module):\n  __parameters__ = ["weight", ]\n  __buffers__ = []\n'
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", data)
        archive.writestr("model/constants.pkl", b"\x80\x02).")
        archive.writestr("model/code/__torch__.py", code)
        archive.writestr("model/version", b"3\n")
    return path


class _LiveUnpickler(pickle.Unpickler):
    """Plain pickle (which runs calls) with the scripted class stubbed: proves a payload live."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__":
            return type(name, (), {"__setstate__": lambda self, state: None})
        return super().find_class(module, name)


@pytest.mark.parametrize(
    ("module", "name", "kind"),
    [("os", "system", "shell"), ("posix", "system", "shell"), ("builtins", "exec", "python")],
)
def test_archive_pickle_that_runs_code_is_refused(
    tmp_path: Path, module: str, name: str, kind: str
) -> None:
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if kind == "shell" else f"open({str(marker)!r}, 'w').write('x')"
    if module == "posix" and os.name != "posix":
        pytest.skip("posix.system exists on POSIX only")
    path = _hostile_archive(tmp_path / "model.pt", _global_call(module, name, arg))
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    assert str(info.value) == f"refusing to unpickle {module}.{name} from model.pt: {REFUSAL}"
    assert "\n" not in str(info.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="TorchScript archive, not a checkpoint"):
        read_checkpoint(path)
    assert not marker.exists()
    # The payload is live: plain pickle would have written the file.
    with zipfile.ZipFile(path) as archive:
        _LiveUnpickler(__import__("io").BytesIO(archive.read("model/data.pkl"))).load()
    assert marker.exists()


def test_module_tree_with_a_cycle_is_refused(tmp_path: Path) -> None:
    # GLOBAL __torch__.M, NEWOBJ, BINPUT 0, {"self": BINGET 0}, BUILD: M.self is M.
    data = b"\x80\x02c__torch__\nM\n)\x81q\x00}X\x04\x00\x00\x00selfh\x00sb."
    path = _crafted_archive(tmp_path / "model.pt", data)
    with pytest.raises(CheckpointError, match="module self contains itself"):
        read_state_dict(path)


def test_state_dict_with_a_hostile_object_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
            return builtins.exec, (f"open({str(marker)!r}, 'w').write('x')",)

    path = tmp_path / "w.bin"
    torch.save({"state_dict": _tiny_clip().state_dict(), "hparams": Evil()}, path)
    with pytest.raises(
        CheckpointError, match=f"refusing to unpickle builtins.exec from w.bin: {REFUSAL}"
    ):
        read_state_dict(path)
    assert not marker.exists()


# -- (c) an archive whose code/ runs on torch.jit.load writes nothing ------------------------


def _inject_setstate(name: str, data: bytes, marker: Path) -> bytes | None:
    """Gives the archive's Linear classes (with a bias) a __setstate__ that writes `marker`."""
    if name.endswith(".debug_pkl"):
        return None  # source ranges of the original code; optional
    if not (name.endswith(".py") and b"class Linear(Module):" in data and b"bias : Tensor" in data):
        return data
    cls = data.split(b"self: ")[1].split(b",")[0].decode()  # its qualified name
    return (
        data
        + (
            f"  def __getstate__(self: {cls}) -> Dict[str, Any]:\n"
            '    return {"training": self.training}\n'
            f"  def __setstate__(self: {cls},\n"
            "    state: Dict[str, Any]) -> NoneType:\n"
            f'    torch.save(torch.zeros([1]), "{marker}")\n'
            '    self.weight = unchecked_cast(Tensor, state["weight"])\n'
            '    self.bias = unchecked_cast(Tensor, state["bias"])\n'
            '    self.training = unchecked_cast(bool, state["training"])\n'
            "    return None\n"
        ).encode()
    )


def test_setstate_code_in_an_archive_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "written-by-setstate"
    plain = _jit_save(_traced(_Small(), torch.randn(2, 3)), tmp_path / "plain.pt")
    path = _rewrite(plain, tmp_path / "model.pt", lambda n, d: _inject_setstate(n, d, marker))
    with pytest.raises(CheckpointError, match="restores itself with its own __setstate__ code"):
        read_state_dict(path)
    assert not marker.exists()
    # torch.jit.load compiles code/ and runs that __setstate__: the archive is really hostile.
    _jit_state(path)
    assert marker.exists()


def test_module_keeping_its_own_state_is_refused(tmp_path: Path, capfd: Any) -> None:
    path = _jit_save(lambda: torch.jit.script(_OwnState()), tmp_path / "own.pt")
    with pytest.raises(CheckpointError, match="__setstate__ code; refusing to run it"):
        read_torchscript(path)
    assert "SIDE-EFFECT" not in capfd.readouterr().out
    # Without its code/ folder the tuple state still cannot be mapped to names: refused too.
    bare = _rewrite(path, tmp_path / "bare.pt", lambda n, d: None if "/code/" in n else d)
    with pytest.raises(CheckpointError, match="__setstate__"):
        read_torchscript(bare)


# -- malformed archives and other formats --------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("truncate", r"data/0 has 4 bytes, expected 8"),
        ("drop", r"tensor record \S+/data/0 is missing"),
        ("big-endian", "saved big-endian"),
        ("no-data-pkl", "one <root>/data.pkl"),
    ],
)
def test_malformed_archives_are_refused(tmp_path: Path, change: str, needle: str) -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w

    plain = _jit_save(lambda: torch.jit.script(Two()), tmp_path / "plain.pt")

    def edit(name: str, data: bytes) -> bytes | None:
        if name.endswith("/data/0"):
            return None if change == "drop" else data[:4] if change == "truncate" else data
        if name.endswith("/byteorder") and change == "big-endian":
            return b"big"
        return None if name.endswith("/data.pkl") and change == "no-data-pkl" else data

    path = _rewrite(plain, tmp_path / "model.pt", edit)
    with pytest.raises(CheckpointError, match=needle):
        read_state_dict(path)


@pytest.mark.parametrize("fmt", ["safetensors", "zip", "legacy", "lightning", "module"])
def test_plain_state_dicts(tmp_path: Path, fmt: str) -> None:
    want = _Small().state_dict()
    path = tmp_path / "w.pt"
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in want.items()}, str(path))
    elif fmt == "lightning":
        torch.save({"state_dict": want, "epoch": 3, "optimizer_states": [{}]}, path)
    elif fmt == "module":
        torch.save({f"module.{k}": v for k, v in want.items()}, path)
    else:
        torch.save(want, path, _use_new_zipfile_serialization=fmt == "zip")
    got = read_state_dict(path)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], v) for k, v in want.items())


def test_non_checkpoints_are_refused(tmp_path: Path) -> None:
    page = tmp_path / "ViT-B-32.pt"
    page.write_text("<!DOCTYPE html><html><body>Not Found</body></html>")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        read_state_dict(page)
    fake = tmp_path / "w.safetensors"
    fake.write_bytes(b"\x00" * 32)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_state_dict(fake)
    broken = tmp_path / "w.bin"
    broken.write_bytes(b"\x80\x02}q\x00")  # a pickle cut off mid-way
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        read_state_dict(broken)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        read_state_dict(tmp_path / "nope.pt")


def test_lenient_and_strict_unpickling() -> None:
    data = pickle.dumps({"cb": _Stub(), "x": [1, 2.5]}, protocol=2)
    loose = RestrictedUnpickler(__import__("io").BytesIO(data)).load()
    assert isinstance(loose["cb"], Placeholder) and loose["cb"].state == {"n": 1}
    strict = type("Strict", (RestrictedUnpickler,), {"strict": True, "source": "x.pt"})
    with pytest.raises(CheckpointError, match=f"refusing to unpickle {__name__}._Stub from x.pt"):
        strict(__import__("io").BytesIO(data)).load()


class _Stub:
    def __init__(self) -> None:
        self.n = 1
