"""A run's state: everything `generate` needs to continue a stopped run exactly where it was.

A state is captured between two iterations and holds the iteration the run continues at, every
picture's drawer parameters, the optimiser's state, every picture's random generator, the loss
history, the video's frames so far (so the finished MP4 has every frame from the start), the
run's resolved settings and what identifies the run (`run_identity`).

It is one safetensors file, read and written through `engine.checkpoints` (the one policy for
files with tensors), so reading it runs no code: an 8-byte header length, a JSON header, raw
tensor bytes. The tensors (on the CPU, in the run's dtypes):

    drawer.{p}.{k}      parameter k of picture p, in `Drawer.parameters()` order
    optim.{j}.{name}    the optimiser's state of parameter j (all pictures' parameters in order)
    rng.{p}             picture p's generator (`torch.Generator.get_state()`)
    losses              (iterations done, pictures) float32
    frame.{k}           video frame k as PNG bytes (uint8), at the picture's own size

and the rest is JSON in the header's metadata, under "text2art": the format and its version, the
engine's version, the iteration, the total, the settings and the identity. `decode_state`
checks the format; `check_identity` that the state belongs to the run; `restore` every name,
shape and dtype against the freshly built run before it copies anything. Any mismatch is a
`StateError` with one line that says what differs.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from engine import catalog
from engine.checkpoints import tensors_from_bytes, tensors_to_bytes
from engine.errors import CheckpointError, StateError, one_line
from engine.files import atomic_write_bytes
from engine.optimisers import SCALARS, state_keys
from engine.prepare import run_vqgan
from engine.prompts import image_prompt_entry, parse_image_prompt
from engine.settings import ResolvedSettings, record
from engine.version import __version__

STATE_FORMAT = "text2art-run-state"
STATE_VERSION = 1
STATE_SUFFIX = ".resume.safetensors"  # city.png -> city.resume.safetensors
_META_KEY = "text2art"
_MAX_HEADER = 16 * 1024 * 1024  # bytes of JSON header a state may have
_NAME = re.compile(r"drawer\.\d+\.\d+|optim\.\d+\.[a-z_]+|rng\.\d+|losses|frame\.\d+")
_MACHINE_FIELDS = {"device"}  # not part of what a run is: a state moves between machines


@dataclass
class RunState:
    """A stopped run: it continues at `iteration` (0-based; that many iterations are done)."""

    iteration: int
    total: int
    settings: dict[str, Any]  # the resolved settings as JSON, without the device
    identity: dict[str, Any]  # `run_identity` of the run that wrote it
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    frames: list[bytes] = field(default_factory=list)
    engine_version: str = __version__

    def resolved_settings(self, **machine: Any) -> ResolvedSettings:
        """The run's settings (`machine`: the device to run on); `SettingsError` if damaged."""
        return ResolvedSettings.create(**{**self.settings, **machine})


class Checkpoint(Protocol):
    """Where a running `generate` saves its state now and then (a job's worker)."""

    def due(self, iteration: int) -> bool:
        """Whether to save the state before `iteration` (asked once per iteration)."""
        ...

    def save(self, state: RunState) -> None:
        """Keep the state (the loop waits for this call only)."""
        ...


def state_path(output: str | Path) -> Path:
    """Where the CLI keeps the state of the run that writes `output`: beside it."""
    output = Path(output)
    return output.with_name(output.stem + STATE_SUFFIX)


# -- identity ---------------------------------------------------------------------------------
def run_identity(s: ResolvedSettings) -> dict[str, Any]:
    """What makes two runs the same run: the settings (uploads by their content, so a node may
    keep them under another path) and the weights files it reads (by size)."""
    data = record(s, _MACHINE_FIELDS)
    data["init_image"] = _digest(s.init_image) if s.init_image else None
    data["image_prompts"] = [_image_prompt_digest(p) for p in s.image_prompts]
    models = {
        label: path.stat().st_size if path.is_file() else None
        for label, _, path in catalog.run_files(s.clip_models, run_vqgan(s))
    }
    return {"settings": data, "models": models}


def _image_prompt_digest(entry: str) -> str:
    """An image prompt by its file's content, with its weight and stop."""
    prompt = parse_image_prompt(entry)
    return image_prompt_entry(_digest(prompt.text), prompt.weight, prompt.stop)


def _digest(path: str) -> str:
    try:
        return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return f"unreadable:{Path(path).name}"


def check_identity(state: RunState, s: ResolvedSettings) -> None:
    """Raise `StateError` unless `state` was written by this run (same settings, same model
    files, same engine version)."""
    if state.engine_version != __version__:
        raise StateError(
            f"the state was written by text2art {state.engine_version}; this is {__version__}"
        )
    here = run_identity(s)
    for part in ("settings", "models"):
        theirs, ours = state.identity.get(part), here[part]
        if theirs == ours:
            continue
        if not isinstance(theirs, dict):
            raise StateError(f"the state has no {part}")
        key = next(k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k))
        raise StateError(
            f"the state belongs to another run: {key} is {theirs.get(key)!r} there, "
            f"{ours.get(key)!r} here"
        )


# -- capture and restore ----------------------------------------------------------------------
def capture(
    iteration: int,
    s: ResolvedSettings,
    drawers: list[Any],
    opt: torch.optim.Optimizer,
    gens: list[torch.Generator],
    history: torch.Tensor,
    frames: list[bytes],
) -> RunState:
    """The run as it stands before iteration `iteration` (copies on the CPU)."""
    tensors: dict[str, torch.Tensor] = {}
    for p, drawer in enumerate(drawers):
        for k, param in enumerate(_params(drawer)):
            tensors[f"drawer.{p}.{k}"] = _cpu(param)
    for j, values in opt.state_dict()["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{j}.{name}"] = _cpu(value)
    for p, g in enumerate(gens):
        tensors[f"rng.{p}"] = g.get_state().clone()
    tensors["losses"] = _cpu(history[:iteration].float())
    settings = record(s, _MACHINE_FIELDS)
    return RunState(iteration, s.total_iterations, settings, run_identity(s), tensors, list(frames))


def restore(
    state: RunState,
    drawers: list[Any],
    opt: torch.optim.Optimizer,
    gens: list[torch.Generator],
    history: torch.Tensor,
) -> None:
    """Put `state` into the freshly built run (after checking every tensor fits)."""
    t = state.tensors
    params = [param for drawer in drawers for param in _params(drawer)]
    expected = {f"drawer.{p}.{k}" for p, d in enumerate(drawers) for k in range(len(_params(d)))}
    expected |= {f"rng.{p}" for p in range(len(gens))} | {"losses"}
    optim = {name for name in t if name.startswith("optim.")}
    missing = sorted(expected - set(t))
    extra = sorted(set(t) - expected - optim - {n for n in t if n.startswith("frame.")})
    if missing or extra:
        raise StateError(f"the state does not fit this run (missing {missing}, unknown {extra})")
    flat = iter(params)
    for p, drawer in enumerate(drawers):
        for k, _ in enumerate(_params(drawer)):
            _expect(t[f"drawer.{p}.{k}"], next(flat), f"drawer.{p}.{k}")
    opt_state = _optimiser_state(t, params, optim, state_keys(opt))
    for p in range(len(gens)):
        _expect(t[f"rng.{p}"], gens[p].get_state(), f"rng.{p}")
    losses = t["losses"]
    if tuple(losses.shape) != (state.iteration, len(drawers)) or losses.dtype != torch.float32:
        raise StateError(f"the state's losses are {tuple(losses.shape)}, not a history")
    # Everything fits: copy.
    with torch.no_grad():
        for param, name in zip(params, _param_names(drawers), strict=True):
            param.copy_(t[name])
        history[: state.iteration] = losses.to(history.device, history.dtype)
    sd = opt.state_dict()
    sd["state"] = opt_state
    opt.load_state_dict(sd)
    for p, g in enumerate(gens):
        g.set_state(t[f"rng.{p}"])


def _optimiser_state(
    t: dict[str, torch.Tensor], params: list[torch.Tensor], names: set[str], keys: frozenset[str]
) -> dict[int, dict[str, torch.Tensor]]:
    """The optimiser's per-parameter state from the `optim.{j}.{name}` tensors, checked: every
    parameter with a state has each of `keys` (the run's optimiser's), the `SCALARS` 0-d, every
    other entry shaped like its parameter."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name in sorted(names):
        _, j_text, key = name.split(".", 2)
        j = int(j_text)
        if j >= len(params):
            raise StateError(f"the state's {name} has no parameter in this run")
        if key not in keys:
            raise StateError(f"the state's {name} is not kept by this run's optimiser")
        value = t[name]
        shape = () if key in SCALARS else tuple(params[j].shape)
        if tuple(value.shape) != shape or value.dtype != torch.float32:
            raise StateError(f"the state's {name} is {_describe(value)}, expected {list(shape)}")
        state.setdefault(j, {})[key] = value
    for j, values in state.items():
        if set(values) != keys:
            missing = sorted(keys - set(values))
            raise StateError(f"the state of the optimiser's parameter {j} lacks {missing}")
    return state


def _expect(value: torch.Tensor, like: torch.Tensor, name: str) -> None:
    if value.shape != like.shape or value.dtype != like.dtype:
        raise StateError(f"the state's {name} is {_describe(value)}, expected {_describe(like)}")


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}"


def _params(drawer: Any) -> list[torch.Tensor]:
    return [param for group in drawer.parameters() for param in group["params"]]


def _param_names(drawers: list[Any]) -> list[str]:
    return [f"drawer.{p}.{k}" for p, d in enumerate(drawers) for k in range(len(_params(d)))]


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").clone().contiguous()


def frames_before(iteration: int, every: int) -> int:
    """How many loop frames a video captured before `iteration` (iterations 0, every, ...)."""
    return -(-iteration // every)


def open_frame(data: bytes, size: tuple[int, int], index: int) -> Image.Image:
    """A saved video frame, checked to be a PNG of the run's size before it is decoded."""
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG"])
        if image.size != size:
            raise StateError(f"the state's frame {index} is {image.size}, the run's size {size}")
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, StateError):
            raise
        raise StateError(f"the state's frame {index} is not a PNG: {one_line(exc)}") from None


# -- the file ---------------------------------------------------------------------------------
def encode_state(state: RunState) -> bytes:
    """The state as one safetensors file's bytes."""
    tensors = dict(state.tensors)
    for k, frame in enumerate(state.frames):
        tensors[f"frame.{k}"] = torch.frombuffer(bytearray(frame), dtype=torch.uint8)
    meta = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "engine": state.engine_version,
        "iteration": state.iteration,
        "total": state.total,
        "frames": len(state.frames),
        "settings": state.settings,
        "identity": state.identity,
    }
    return tensors_to_bytes(tensors, {_META_KEY: json.dumps(meta, sort_keys=True)})


def decode_state(data: bytes, source: str = "the state") -> RunState:
    """A state from a file's bytes; `StateError` naming `source` for anything but a
    text2art run state of this format version."""
    meta = _read_meta(data, source)
    try:
        tensors = tensors_from_bytes(data)
    except CheckpointError as exc:
        raise StateError(f"{source} is damaged: {one_line(exc, 200, typed=False)}") from None
    unknown = sorted(name for name in tensors if not _NAME.fullmatch(name))
    if unknown:
        raise StateError(f"{source} holds tensors a run state does not have: {unknown[:3]}")
    n_frames = meta["frames"]
    frames = [_frame_bytes(tensors.pop(f"frame.{k}", None), k, source) for k in range(n_frames)]
    if any(name.startswith("frame.") for name in tensors):
        raise StateError(f"{source} has more frames than its header says")
    return RunState(
        iteration=meta["iteration"],
        total=meta["total"],
        settings=meta["settings"],
        identity=meta["identity"],
        tensors=tensors,
        frames=frames,
        engine_version=meta["engine"],
    )


def _read_meta(data: bytes, source: str) -> dict[str, Any]:
    """The JSON under the header's metadata, with its fields' types checked."""
    if len(data) < 8:
        raise StateError(f"{source} is truncated ({len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(_MAX_HEADER, len(data) - 8):
        raise StateError(f"{source} is not a text2art run state (truncated, or another format)")
    try:
        header = json.loads(data[8 : 8 + size])
        meta = json.loads(header["__metadata__"][_META_KEY])
    except (ValueError, KeyError, TypeError):
        raise StateError(f"{source} is not a text2art run state (no text2art header)") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise StateError(f"{source} is not a text2art run state")
    if meta.get("version") != STATE_VERSION:
        raise StateError(
            f"{source} has state format {meta.get('version')!r}; this text2art reads "
            f"{STATE_VERSION}"
        )
    kinds = {"engine": str, "iteration": int, "total": int, "frames": int, "settings": dict}
    kinds["identity"] = dict
    for key, kind in kinds.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise StateError(f"{source} has a malformed header ({key})")
    if not 0 <= meta["iteration"] <= meta["total"] or meta["frames"] < 0:
        raise StateError(f"{source} has a malformed header (iteration)")
    return meta


def _frame_bytes(t: torch.Tensor | None, k: int, source: str) -> bytes:
    if t is None or t.dtype != torch.uint8 or t.dim() != 1:
        raise StateError(f"{source} lacks video frame {k}")
    return bytes(t.numpy().tobytes())


def write_state(path: str | Path, state: RunState) -> Path:
    """Write the state to `path` atomically (an interrupted write leaves the old file)."""
    return atomic_write_bytes(path, encode_state(state))


def read_state(path: str | Path) -> RunState:
    """The state in a file; `StateError` (one line) when it cannot be read or used."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or one_line(exc)}") from None
    return decode_state(data, str(path))
