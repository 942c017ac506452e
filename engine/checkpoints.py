"""Every weights file the engine reads, behind one policy: nothing in a file can execute code.

- `read_checkpoint`: a VQGAN training checkpoint (torch zip or legacy pickle, often a Lightning
  one) or safetensors; foreign objects in it (callbacks, configs) become inert `Placeholder`s.
- `tensors_from_bytes` / `tensors_to_bytes`: a run's state (`engine.runstate`), safetensors in
  memory.
- `read_state_dict`: CLIP weights from safetensors, a torch state dict or one of OpenAI's
  TorchScript archives (ViT-B-32.pt, ...), whose tensors are read from the archive's pickle
  with the same unpickler; its code/ folder, which `torch.jit.load` compiles and runs
  (`__setstate__`), is only read as text to learn which attributes are weights.

Pickles are read by `RestrictedUnpickler`, which imports only an allow-list of plain-data types
and torch's tensor rebuilders. Any other global is never imported: a training checkpoint gets a
placeholder for it, CLIP weights (which hold nothing else) are refused with `CheckpointError`.
TorchScript's own module classes (`__torch__.*`) are never importable either: always placeholders.
"""

from __future__ import annotations

import _compat_pickle
import ast
import importlib
import io
import logging
import pickle
import re
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from engine.errors import CheckpointError, one_line

log = logging.getLogger(__name__)

_REFUSAL = "checkpoints may only hold tensors and plain data"
# What a hostile or damaged pickle raises while it is read (RecursionError is a RuntimeError).
_UNREADABLE = (
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    EOFError,
    AttributeError,
    IndexError,
    KeyError,
    TypeError,
    ValueError,
    RuntimeError,
)


# -- restricted unpickling ------------------------------------------------------------------

# The only globals a checkpoint may import. Everything else (os.system, builtins.eval,
# pytorch_lightning callbacks, omegaconf containers, ...) is never imported.
_SAFE_GLOBALS: dict[str, frozenset[str]] = {
    "collections": frozenset({"OrderedDict", "defaultdict", "deque", "Counter"}),
    "builtins": frozenset(
        {
            "dict",
            "list",
            "set",
            "frozenset",
            "tuple",
            "int",
            "float",
            "complex",
            "bool",
            "str",
            "bytes",
            "bytearray",
            "slice",
            "range",
        }
    ),  # fmt: skip
    # Protocol-2 pickles (torch.save's default) store bytes as _codecs.encode(text, 'latin1').
    "_codecs": frozenset({"encode"}),
    "torch": frozenset({"Size", "device"}),
    "torch._utils": frozenset(
        {
            "_rebuild_tensor",
            "_rebuild_tensor_v2",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
            "_rebuild_device_tensor_from_numpy",
        }
    ),  # fmt: skip
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
}


class Placeholder:
    """Stands in for an object whose class or function a checkpoint may not import; inert."""

    module = ""
    qualname = ""
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    items: list[Any]

    # __new__ rather than __init__: NEWOBJ (how TorchScript pickles modules) skips __init__.
    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        self = super().__new__(cls)
        self.args, self.kwargs, self.state, self.items = args, kwargs, None, []
        return self

    def __setstate__(self, state: Any) -> None:
        self.state = state

    # List- and dict-like pickles fill themselves through these.
    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def __repr__(self) -> str:
        return f"<placeholder for {self.module}.{self.qualname}>"


def _placeholder_class(module: str, name: str) -> type[Placeholder]:
    return type(name, (Placeholder,), {"module": module, "qualname": name})


def _safe_global(module: str, name: str) -> Any | None:
    """The allowed object `module.name`, or None."""
    if name in _SAFE_GLOBALS.get(module, ()):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):  # e.g. numpy._core on numpy 1
            return None
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)  # torch.float32, ...
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """Imports only `_SAFE_GLOBALS`; other globals become placeholders, or refusals if strict."""

    source = "checkpoint"  # the file, for messages
    strict = False

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles (torch.save's default) name Python 2 modules (__builtin__.set);
        # the stock find_class renames them so, and overriding it drops that.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        else:
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = _safe_global(module, name)
        if found is not None:
            return found
        if self.strict:
            raise CheckpointError(
                f"refusing to unpickle {module}.{name} from {self.source}: {_REFUSAL}"
            )
        log.debug("%s refers to %s.%s; using a placeholder", self.source, module, name)
        return _placeholder_class(module, name)


class RestrictedPickle:
    """A `pickle_module` for `torch.load` that unpickles with `RestrictedUnpickler`."""

    Unpickler: type[RestrictedUnpickler] = RestrictedUnpickler

    @classmethod
    def load(cls, file: IO[bytes], **kwargs: Any) -> Any:
        return cls.Unpickler(file, **kwargs).load()

    @classmethod
    def loads(cls, data: bytes, **kwargs: Any) -> Any:
        return cls.load(io.BytesIO(data), **kwargs)

    @classmethod
    def for_file(cls, source: str, strict: bool) -> type[RestrictedPickle]:
        """This pickle module with an unpickler that names `source` and has the given mode."""
        attrs = {"source": source, "strict": strict}
        unpickler = type("RestrictedUnpickler", (RestrictedUnpickler,), attrs)
        return type("RestrictedPickle", (cls,), {"Unpickler": unpickler})


# -- file kinds -----------------------------------------------------------------------------


def _kind(path: Path) -> str:
    """'safetensors', 'torchscript' or 'torch' (zip or legacy pickle); refuses anything else."""
    with path.open("rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        return "safetensors"
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise CheckpointError(f"{path}: not a torch checkpoint (starts with {head[:12]!r})")
    return "torchscript" if _is_torchscript(path) else "torch"


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


def _looks_like_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then the JSON header.
    return len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def tensors_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file held in memory (a run's state): raw bytes behind a JSON
    header, nothing that runs; `CheckpointError` when it is not a readable safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except SafetensorError as exc:
        raise CheckpointError(f"not a readable safetensors file ({exc})") from None


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file's bytes holding `tensors` (contiguous, CPU) and text `metadata`."""
    from safetensors.torch import save

    return bytes(save(tensors, metadata=metadata))


def _torch_load(path: Path, strict: bool) -> Any:
    """`torch.load` with a restricted unpickler: a zip or legacy torch checkpoint's object."""
    # weights_only=False only hands unpickling to RestrictedPickle, whose find_class imports
    # nothing outside a safe allow-list (torch refuses weights_only=True with a pickle_module).
    try:
        return torch.load(
            path,
            map_location="cpu",
            pickle_module=RestrictedPickle.for_file(path.name, strict),
            weights_only=False,
            mmap=zipfile.is_zipfile(path),  # tensors nobody uses (loss.*) are then never read
        )
    except CheckpointError:
        raise
    except _UNREADABLE as exc:
        why = one_line(exc)
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({why})") from None


# -- the readers ----------------------------------------------------------------------------


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """The top-level object of a torch checkpoint (zip or legacy) or a safetensors file."""
    path = Path(path)
    kind = _kind(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind == "torchscript":
        # Training checkpoints are never TorchScript; torch.load would hand them to jit.load.
        raise CheckpointError(f"{path}: a TorchScript archive, not a checkpoint")
    obj = _torch_load(path, strict=False)  # Lightning checkpoints carry foreign objects
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return obj


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """CLIP weights from safetensors, a torch state dict (.pt/.bin/.pth) or OpenAI's TorchScript."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    kind = _kind(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind == "torchscript":
        return read_torchscript(path)
    obj = _torch_load(path, strict=True)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # Lightning/open_clip training checkpoints
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return {
        k.removeprefix("module."): v  # saved from a DataParallel wrapper
        for k, v in obj.items()
        if isinstance(k, str) and isinstance(v, torch.Tensor)
    }


# -- TorchScript archives -------------------------------------------------------------------

# A TorchScript archive (torch.jit.save) is a zip: <root>/data.pkl pickles the module tree, each
# module a `__torch__.<path>.<Class>` object whose state is a dict of its attributes; tensors
# are persistent ids ('storage', torch.<T>Storage, key, location, numel) of <root>/data/<key>.
# <root>/code/ holds each class's TorchScript source, declaring which attributes are
# parameters and buffers (`__parameters__ = [...]`, `__buffers__ = [...]`).


# The storage types archives name, as torch's own pickler writes them (torch.<T>Storage).
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


def _keep_value(value: Any, *_: Any) -> Any:
    return value


# torch.jit._pickle's helpers that typed lists and dicts in TorchScript pickles are wrapped in;
# each only returns its first argument, so an inert stand-in replaces the import.
_JIT_PICKLE = {
    name: _keep_value
    for name in (
        "restore_type_tag",
        "build_intlist",
        "build_tensorlist",
        "build_doublelist",
        "build_boollist",
    )
}


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


class _ArchiveUnpickler(RestrictedUnpickler):
    """Reads a TorchScript data.pkl: modules become placeholders, tensors come from the zip."""

    strict = True  # such a pickle holds modules, tensors and plain data, nothing else

    def __init__(self, archive: zipfile.ZipFile, root: str, source: str):
        super().__init__(io.BytesIO(archive.read(f"{root}/data.pkl")))
        self.archive, self.root, self.source = archive, root, source
        self.storages: dict[str, torch.storage.TypedStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return _placeholder_class(module, name)  # a scripted class: never importable
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch.jit._pickle" and name in _JIT_PICKLE:
            return _JIT_PICKLE[name]
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> torch.storage.TypedStorage:
        match pid:
            # The location (OpenAI's archives say cuda:0) is ignored: everything loads to CPU.
            case ("storage", _StorageType() as kind, str() as key, _, int() as numel):
                if key not in self.storages:
                    self.storages[key] = self._storage(kind.dtype, key, numel)
                return self.storages[key]
        raise CheckpointError(f"{self.source}: unexpected persistent id {str(pid)[:80]}")

    def _storage(self, dtype: torch.dtype, key: str, numel: int) -> torch.storage.TypedStorage:
        """The record <root>/data/<key> as a CPU storage of `numel` `dtype` elements."""
        name = f"{self.root}/data/{key}"
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        try:
            size = self.archive.getinfo(name).file_size
        except KeyError:
            raise CheckpointError(f"{self.source}: tensor record {name} is missing") from None
        if size != nbytes:  # also keeps a lying record from allocating more than it says
            raise CheckpointError(f"{self.source}: {name} has {size} bytes, expected {nbytes}")
        data = self.archive.read(name)
        untyped = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else None
        return torch.storage.TypedStorage(
            wrap_storage=untyped if untyped is not None else torch.UntypedStorage(0),
            dtype=dtype,
            _internal=True,
        )


@dataclass(frozen=True)
class _ClassDecl:
    """What an archive's code/ declares about one class."""

    is_module: bool
    parameters: tuple[str, ...] = ()
    buffers: tuple[str, ...] = ()
    has_setstate: bool = False


_CLASS_LINE = re.compile(r"class (\w+)(?:\((\w*)\))?:")
_SLOTS_LINE = re.compile(r"  (__parameters__|__buffers__) = (\[.*\])")


def _declarations(archive: zipfile.ZipFile, root: str) -> dict[str, _ClassDecl]:
    """Each scripted class's declarations, by qualified name, from code/ read as text only."""
    out: dict[str, _ClassDecl] = {}
    prefix = f"{root}/code/"
    for name in archive.namelist():
        if not (name.startswith(prefix) and name.endswith(".py")):
            continue
        module = name[len(prefix) : -len(".py")].replace("/", ".")
        text = archive.read(name).decode("utf-8", errors="replace")
        for qualname, decl in _parse_classes(text):
            out[f"{module}.{qualname}"] = decl
    return out


def _parse_classes(text: str) -> list[tuple[str, _ClassDecl]]:
    """(name, declaration) of each top-level class in one TorchScript source file."""
    found: list[tuple[str, dict[str, Any]]] = []
    for line in text.splitlines():
        if m := _CLASS_LINE.fullmatch(line):
            found.append((m[1], {"is_module": m[2] == "Module"}))
        elif found and (m := _SLOTS_LINE.fullmatch(line)):
            try:
                names = ast.literal_eval(m[2])  # a literal list of strings; nothing is run
            except (ValueError, SyntaxError):
                names = []
            key = "parameters" if m[1] == "__parameters__" else "buffers"
            found[-1][1][key] = tuple(str(n) for n in names)
        elif found and line.startswith("  def __setstate__("):
            found[-1][1]["has_setstate"] = True
    return [(name, _ClassDecl(**fields)) for name, fields in found]


def read_torchscript(path: str | Path) -> dict[str, torch.Tensor]:
    """`torch.jit.load(path).state_dict()`, read from the archive's pickle; no code runs."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        root = _archive_root(archive, path)
        unpickler = _ArchiveUnpickler(archive, root, path.name)
        try:
            module = unpickler.load()
        except CheckpointError:
            raise
        except _UNREADABLE as exc:
            why = one_line(exc)
            raise CheckpointError(f"{path}: unreadable TorchScript pickle ({why})") from None
        declarations = _declarations(archive, root)
    if not _is_scripted(module):
        raise CheckpointError(f"{path}: data.pkl holds a {type(module).__name__}, not a module")
    walk = _Walk(declarations, path)
    walk.collect(module, "")
    return walk.out


def _archive_root(archive: zipfile.ZipFile, path: Path) -> str:
    """The archive's top folder (torch.jit.save names it after the file); checks byte order."""
    names = archive.namelist()
    roots = {n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith("/data.pkl")}
    if len(roots) != 1:
        raise CheckpointError(f"{path}: not a TorchScript archive with one <root>/data.pkl")
    root = roots.pop()
    if f"{root}/byteorder" in names:  # absent from older archives (OpenAI's): little-endian
        order = archive.read(f"{root}/byteorder").decode("ascii", errors="replace").strip()
    else:
        order = "little"
    if order != sys.byteorder:
        raise CheckpointError(f"{path}: saved {order}-endian, this machine is {sys.byteorder}")
    return root


def _is_scripted(value: Any) -> bool:
    return isinstance(value, Placeholder) and value.module.split(".")[0] == "__torch__"


@dataclass
class _Walk:
    """Collects a placeholder module tree's weights under state_dict's dotted keys."""

    declarations: Mapping[str, _ClassDecl]
    path: Path
    out: dict[str, torch.Tensor] = field(default_factory=dict)
    ancestors: list[int] = field(default_factory=list)  # a pickle can make cycles

    def collect(self, module: Placeholder, prefix: str) -> None:
        """Add `module`'s parameters, buffers, then its submodules' (state_dict's order)."""
        qualname = f"{module.module}.{module.qualname}"
        decl = self.declarations.get(qualname)
        if (decl and decl.has_setstate) or not isinstance(module.state, dict):
            # torch.jit.load would hand the state to the class's own code; we never run it.
            raise CheckpointError(
                f"{self.path}: {qualname} restores itself with its own __setstate__ code; "
                "refusing to run it"
            )
        if id(module) in self.ancestors:
            raise CheckpointError(f"{self.path}: module {prefix[:-1]} contains itself")
        state: dict[str, Any] = module.state
        if decl is None:  # no code/ for it: every tensor attribute counts, as they mostly do
            names = [k for k, v in state.items() if isinstance(v, torch.Tensor)]
        else:
            names = [*decl.parameters, *decl.buffers]
        for name in names:
            value = state.get(name)
            if isinstance(value, torch.Tensor):  # None: an absent bias, skipped like state_dict
                self.out[prefix + name] = value.detach()
        self.ancestors.append(id(module))
        for name, value in state.items():
            if self._is_module(value):
                self.collect(value, f"{prefix}{name}.")
        self.ancestors.pop()

    def _is_module(self, value: Any) -> bool:
        if not _is_scripted(value):
            return False
        decl = self.declarations.get(f"{value.module}.{value.qualname}")
        return decl is None or decl.is_module  # scripted non-module classes hold no weights
