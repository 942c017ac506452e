"""Resume, not restart: a stopped run continues from its state to the bytes of the uninterrupted
run (every style, variations, a video), and a state that is not this run's is refused."""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import png_bytes, run_cli, tiny_settings

from engine import (
    Cancelled,
    ModelCache,
    Result,
    RunState,
    StateError,
    decode_state,
    encode_state,
    generate,
    read_state,
    resolve,
    state_path,
    write_state,
)

# The cases the issue names: every style, variations 2, a video.
CASES: dict[str, dict[str, Any]] = {
    "pixel art": {"style": "pixel art"},
    "painting": {"style": "painting", "strokes": 24},
    "image": {"style": "image", "vqgan_model": "tiny-random"},
    "variations": {"style": "pixel art", "variations": 2},
    "video": {"style": "painting", "strokes": 24, "make_video": True},
}
ITERATIONS = 9
# "A random iteration", fixed per case so a failure can be replayed: the stops of each case.
STOPS = {name: sorted(random.Random(name).sample(range(1, ITERATIONS), 2)) for name in CASES}


def _stopper(at: int) -> Any:
    """`should_stop` that stops the run before 0-based iteration `at` of this attempt's count."""
    calls = [0]

    def stop() -> bool:
        calls[0] += 1
        return calls[0] > at

    return stop


def _run(s: Any, models: ModelCache, video: Path | None, **kwargs: Any) -> Result:
    return generate(s, models=models, video_path=video, **kwargs)


def _stop_at(s: Any, models: ModelCache, video: Path | None, at: int, state: Any = None) -> bytes:
    """Run (or continue `state`) until iteration `at` stops it; the state as file bytes."""
    first = state.iteration if state is not None else 0
    with pytest.raises(Cancelled) as caught:
        _run(s, models, video, resume=state, should_stop=_stopper(at - first))
    assert caught.value.state is not None
    return encode_state(caught.value.state())


def _files(result: Result) -> list[bytes]:
    return [png_bytes(image) for image in result.images] + [png_bytes(result.image)]


@pytest.mark.parametrize("case", list(CASES))
def test_stopped_twice_and_resumed_gives_the_uninterrupted_bytes(
    case: str, models: ModelCache, tmp_path: Path
) -> None:
    s = resolve(tiny_settings(iterations=ITERATIONS, **CASES[case]))
    video = s.make_video
    whole = _run(s, models, tmp_path / "whole.mp4" if video else None)
    out = tmp_path / "resumed.mp4" if video else None
    first, second = STOPS[case]
    # Stop, keep the state as a file's bytes, continue, stop again, continue to the end.
    state = decode_state(_stop_at(s, models, out, first))
    assert state.iteration == first and state.total == ITERATIONS
    state = decode_state(_stop_at(s, models, out, second, state))
    assert state.iteration == second
    resumed = _run(s, models, out, resume=state)
    assert resumed.resumed_from == second and whole.resumed_from == 0
    assert _files(resumed) == _files(whole)
    assert resumed.losses == whole.losses  # the history before the stops came along
    assert resumed.svgs == whole.svgs
    if video:
        assert out is not None and (tmp_path / "whole.mp4").read_bytes() == out.read_bytes()


def test_the_resumed_video_has_every_frame(models: ModelCache, tmp_path: Path) -> None:
    import av

    s = resolve(tiny_settings(iterations=ITERATIONS, **CASES["video"]))
    out = tmp_path / "v.mp4"
    state = decode_state(_stop_at(s, models, out, 5))
    assert len(state.frames) == 5  # iterations 0..4, one frame each (short runs: every one)
    assert not out.exists()  # nothing published before the run ends
    _run(s, models, out, resume=state)
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    # 9 loop frames + the final image + one second (10 fps) holding it.
    assert frames == ITERATIONS + 1 + 10


def test_checkpoint_is_offered_the_state_when_due(models: ModelCache) -> None:
    s = resolve(tiny_settings(iterations=ITERATIONS))
    saved: list[RunState] = []

    class Every3:
        def due(self, iteration: int) -> bool:
            return iteration % 3 == 0

        def save(self, state: RunState) -> None:
            saved.append(decode_state(encode_state(state)))

    whole = generate(s, models=models, checkpoint=Every3())
    assert [state.iteration for state in saved] == [3, 6]
    # The last checkpoint, resumed as a worker would after a kill -9: the same picture.
    resumed = generate(s, models=models, resume=saved[-1])
    assert png_bytes(resumed.image) == png_bytes(whole.image)


def test_state_file_round_trip_and_atomic_write(models: ModelCache, tmp_path: Path) -> None:
    s = resolve(tiny_settings(iterations=6))
    data = _stop_at(s, models, None, 2)
    path = write_state(tmp_path / "a.resume.safetensors", decode_state(data))
    assert read_state(path).tensors.keys() == decode_state(data).tensors.keys()
    assert [p.name for p in tmp_path.iterdir()] == ["a.resume.safetensors"]  # no .part left
    assert state_path(tmp_path / "city.png") == tmp_path / "city.resume.safetensors"


# -- refused states ---------------------------------------------------------------------------
@pytest.fixture
def stopped(models: ModelCache) -> tuple[Any, bytes]:
    s = resolve(tiny_settings(iterations=6))
    return s, _stop_at(s, models, None, 3)


def _edit_header(data: bytes, edit: Any) -> bytes:
    """The file with its text2art metadata changed by `edit(meta)` (tensors untouched)."""
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    meta = json.loads(header["__metadata__"]["text2art"])
    edit(meta)
    header["__metadata__"]["text2art"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + size :]


class _Boom:
    def __reduce__(self) -> Any:
        return (Path("/tmp/text2art-pickle-ran").touch, ())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d[:5], "is truncated"),
        (lambda d: d[: len(d) // 2], "damaged"),
        (lambda d: pickle.dumps({"x": _Boom()}), "not a text2art run state"),
        (lambda d: torch.zeros(3).numpy().tobytes() * 4, "not a text2art run state"),
        (lambda d: _edit_header(d, lambda m: m.update(version=2)), "state format 2; this"),
        (lambda d: _edit_header(d, lambda m: m.update(format="x")), "not a text2art run state"),
        (lambda d: _edit_header(d, lambda m: m.update(iteration="3")), "malformed header"),
        (lambda d: _edit_header(d, lambda m: m.update(frames=2)), "lacks video frame 0"),
    ],
    ids=["short", "truncated", "pickle", "garbage", "version", "format", "types", "frames"],
)
def test_damaged_or_foreign_files_are_refused(
    stopped: tuple[Any, bytes], make: Any, message: str
) -> None:
    _, data = stopped
    with pytest.raises(StateError, match=message):
        decode_state(make(data), "x.resume.safetensors")
    assert not Path("/tmp/text2art-pickle-ran").exists()  # nothing in the file ran


def test_a_state_of_another_run_is_refused_before_models_load(
    stopped: tuple[Any, bytes], models: ModelCache
) -> None:
    s, data = stopped
    state = decode_state(data)
    for other, message in [
        ({"iterations": 7}, "iterations is 6 there, 7 here"),
        ({"prompts": "a cat"}, "prompts is 'underwater city' there, 'a cat' here"),
        ({"seed": 8}, "seed is 7 there, 8 here"),
    ]:
        with pytest.raises(StateError, match=message):
            generate(resolve(tiny_settings(**{"iterations": 6, **other})), resume=state)
    # Another engine version.
    with pytest.raises(StateError, match="written by text2art 0.0.1; this is"):
        generate(s, resume=decode_state(_edit_header(data, lambda m: m.update(engine="0.0.1"))))
    # The device is not part of what a run is: a state moves between machines.
    assert "device" not in state.identity["settings"] and "device" not in state.settings
    elsewhere = s.model_copy(update={"device": None})
    assert generate(elsewhere, resume=state, models=models).resumed_from == 3


def test_wrong_shapes_are_refused_before_anything_is_copied(
    stopped: tuple[Any, bytes], models: ModelCache
) -> None:
    s, data = stopped
    for name, value in [
        ("drawer.0.0", torch.zeros(1, 3, 2, 2)),
        ("optim.0.exp_avg", torch.zeros(5)),
        ("rng.0", torch.zeros(10, dtype=torch.uint8)),
        ("losses", torch.zeros(2, 1)),
    ]:
        state = decode_state(data)
        state.tensors[name] = value
        with pytest.raises(StateError, match=name.split(".")[0]):
            generate(s, resume=state, models=models)
    state = decode_state(data)
    state.tensors["drawer.1.0"] = torch.zeros(1)
    with pytest.raises(StateError, match=r"unknown \['drawer.1.0'\]"):
        generate(s, resume=state, models=models)


# -- the command line -------------------------------------------------------------------------
def _cli(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    code = "import sys; from api.cli import main; main(sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


GEN = ["generate", "a red circle", "--clip-model", "tiny-random", "--size", "32x32", "--style"]
GEN += ["painting", "--strokes", "16", "--cutouts", "4", "--seed", "5", "--video"]


def test_ctrl_c_saves_the_run_and_resume_finishes_it(tmp_path: Path) -> None:
    iterations = ["--iterations", "24"]
    whole = _cli([*GEN, *iterations, "--out", "whole.png"], tmp_path)
    stopped = _cli([*GEN, *iterations, "--out", "cut.png"], tmp_path)
    # Wait until the loop runs (the bar shows an iteration), then Ctrl-C.
    deadline = time.monotonic() + 120
    seen = ""
    assert stopped.stderr is not None
    while "1/24" not in seen and time.monotonic() < deadline:
        seen += stopped.stderr.read(1)
    stopped.send_signal(signal.SIGINT)
    _, err = stopped.communicate(timeout=120)
    assert stopped.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"stopped at iteration \d+ of 24; saved cut.resume.safetensors; "
        r"continue with: text2art generate --resume cut.resume.safetensors",
        last,
    ), last
    assert not (tmp_path / "cut.png").exists()
    state = read_state(tmp_path / "cut.resume.safetensors")
    assert 0 < state.iteration < 24
    resumed = _cli(["generate", "--resume", "cut.resume.safetensors"], tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming at iteration {state.iteration} of 24" in err
    assert "removed cut.resume.safetensors (the run is complete)" in out
    assert whole.wait(timeout=300) == 0
    for ext in ("png", "svg", "mp4"):
        assert (tmp_path / f"cut.{ext}").read_bytes() == (tmp_path / f"whole.{ext}").read_bytes()
    assert not (tmp_path / "cut.resume.safetensors").exists()


def test_resume_refuses_flags_and_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.resume.safetensors").write_bytes(pickle.dumps([1, 2, 3]))
    code, _, err = run_cli(["generate", "--resume", "bad.resume.safetensors"], capsys)
    assert (code, err) == (
        2,
        "error: --resume: bad.resume.safetensors is not a text2art run state "
        "(truncated, or another format)\n",
    )
    code, _, err = run_cli(["generate", "--resume", "nope.resume.safetensors"], capsys)
    assert (code, err) == (2, "error: --resume: cannot read nope.resume.safetensors: "
                              "No such file or directory\n")  # fmt: skip
    for extra, what in [(["--seed", "3"], "--seed"), (["a cat"], "PROMPT")]:
        code, _, err = run_cli(["generate", "--resume", "bad.resume.safetensors", *extra], capsys)
        assert code == 2
        assert err == f"error: --resume: the run's settings come from its state; leave out {what}\n"


def test_the_state_carries_what_the_run_needs_by_name(stopped: tuple[Any, bytes]) -> None:
    _, data = stopped
    state = decode_state(data)
    names = set(state.tensors)
    assert {"drawer.0.0", "optim.0.step", "optim.0.exp_avg", "optim.0.exp_avg_sq", "rng.0"} <= names
    assert state.tensors["losses"].shape == (3, 1)
    assert state.settings["iterations"] == 6 and "device" not in state.settings
    digest = hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(encode_state(decode_state(data))).hexdigest() == digest


def test_an_interrupted_state_write_leaves_the_previous_state(
    stopped: tuple[Any, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second Ctrl-C while the state is written: the file on disk is the old one, whole."""
    _, data = stopped
    path = tmp_path / "a.resume.safetensors"
    write_state(path, decode_state(data))
    newer = decode_state(data)
    newer.iteration = 4  # any other content
    real_write = Path.write_bytes

    def half_then_ctrl_c(self: Path, content: bytes) -> int:
        real_write(self, content[: len(content) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        write_state(path, newer)
    monkeypatch.undo()
    assert path.read_bytes() == data and read_state(path).iteration == 3
    assert [p.name for p in tmp_path.iterdir()] == ["a.resume.safetensors"]  # no half file
