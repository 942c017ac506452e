"""Prompt cancel: a cancel lands inside an iteration (within one block of a model, forward or
backward) without a state, changes nothing while it is not asked for, and stops only its own
run; a job's cancel is prompt, a shutdown still stops between iterations with the state."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import jobs_config, png_bytes, serving, submit, tiny_settings, wait_for

from api import runner
from api.gpu import GpuLock
from api.runner import RunStop, run_engine
from engine import Cancelled, Limits, ModelCache, Result, generate
from engine.interrupt import Tripwire, blocks

IMAGE = {"style": "image", "vqgan_model": "tiny-random", "iterations": 5}


class Abort:
    """`should_abort` that turns true on its `at`-th read (or on the first read inside the
    backward pass with `in_backward`), and counts the reads of each iteration."""

    def __init__(self, at: int | None = None, in_backward: bool = False):
        self.at, self.in_backward = at, in_backward
        self.reads = 0
        self.aborted_in_backward = False

    def __call__(self) -> bool:
        self.reads += 1
        if self.in_backward and any(f.function == "_on_gradient" for f in inspect.stack()):
            self.aborted_in_backward = True
            return True
        return self.at is not None and self.reads >= self.at


def _hooks(models: ModelCache) -> int:
    """Forward hooks left on any module of the cached models."""
    found = 0
    for value in models._items.values():  # noqa: SLF001 (a test looks at every loaded model)
        module = getattr(value, "model", value)
        if isinstance(module, torch.nn.Module):
            found += sum(len(m._forward_hooks) for m in module.modules())
    return found


def test_an_abort_lands_in_the_middle_of_an_iteration_without_a_state(models: ModelCache) -> None:
    s = tiny_settings(**IMAGE)
    counting = Abort()
    steps: list[int] = []
    generate(s, models=models, should_abort=counting, on_step=lambda st: steps.append(st.iteration))
    per_iteration = counting.reads / 5
    assert per_iteration >= 10  # blocks of CLIP and of the VQGAN, forward and backward

    at = int(2 * per_iteration + per_iteration / 2)  # half-way through the third iteration
    steps.clear()
    with pytest.raises(Cancelled) as caught:
        generate(
            s, models=models, should_abort=Abort(at), on_step=lambda st: steps.append(st.iteration)
        )
    assert caught.value.state is None  # nothing to resume: a person's cancel
    assert str(caught.value) == "cancelled during iteration 3 of 5"
    assert steps == [1, 2]
    assert _hooks(models) == 0  # the tripwire is taken off the shared models


@pytest.mark.parametrize("style", ["image", "pixel art", "painting"])
def test_an_abort_in_the_backward_pass_stops_the_run(models: ModelCache, style: str) -> None:
    s = tiny_settings(**{**IMAGE, "style": style, "strokes": 16})
    abort = Abort(in_backward=True)
    with pytest.raises(Cancelled, match="during iteration 1 of 5"):
        generate(s, models=models, should_abort=abort)
    assert abort.aborted_in_backward


@pytest.mark.parametrize("style", ["image", "pixel art", "painting"])
def test_an_armed_tripwire_changes_no_byte(models: ModelCache, style: str) -> None:
    s = tiny_settings(**{**IMAGE, "style": style, "strokes": 16, "variations": 2})
    plain = generate(s, models=models)
    armed = generate(s, models=models, should_abort=lambda: False)
    assert [png_bytes(i) for i in armed.images] == [png_bytes(i) for i in plain.images]
    assert armed.losses == plain.losses
    assert _hooks(models) == 0


def test_a_stop_between_iterations_still_carries_the_state(models: ModelCache) -> None:
    s = tiny_settings(**IMAGE)
    with pytest.raises(Cancelled) as caught:
        generate(s, models=models, should_stop=lambda: True, should_abort=lambda: False)
    assert caught.value.state is not None
    assert caught.value.state().iteration == 0


def test_the_tripwire_stops_only_the_thread_that_armed_it() -> None:
    model = torch.nn.Sequential(torch.nn.ModuleList([torch.nn.Linear(2, 2)]))
    block = model[0][0]
    assert blocks([model]) == [block]
    trip = Tripwire(lambda: True, lambda: "the test")
    x = torch.ones(1, 2)
    other: list[BaseException | None] = []

    def elsewhere() -> None:
        try:
            block(x)
            other.append(None)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            other.append(exc)

    with trip.armed_on([model]):
        with pytest.raises(Cancelled, match="cancelled during the test"):
            block(x)
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    assert other == [None]  # another run on the shared model went on
    assert len(block._forward_hooks) == 0
    block(x)  # disarmed


def _slow_engine(seen: dict[str, Any]) -> Any:
    """An engine that waits for a stop and reports which kind came first."""

    def engine(settings: Any, **kwargs: Any) -> Result:
        should_stop, should_abort = kwargs["should_stop"], kwargs.get("should_abort")
        seen["started"] = True
        wait_for(should_stop, what="a stop")
        seen["aborted"] = bool(should_abort and should_abort())
        raise Cancelled("stopped")

    return engine


@pytest.mark.parametrize("how", ["abort", "set"])
def test_run_engine_hands_the_abort_to_the_engine(how: str) -> None:
    seen: dict[str, Any] = {}
    stop = RunStop()
    done = threading.Event()

    def go() -> None:
        try:
            run_engine(
                tiny_settings(), gpu=GpuLock(), models=ModelCache(), limits=Limits(),
                cancel=stop, abort=stop.aborted, engine=_slow_engine(seen),
            )  # fmt: skip
        except Cancelled:
            done.set()

    thread = threading.Thread(target=go)
    thread.start()
    wait_for(lambda: seen.get("started"), what="the engine to start")
    getattr(stop, how)()
    thread.join(10)
    assert done.is_set()
    assert seen["aborted"] is (how == "abort")


def test_a_jobs_cancel_is_prompt_and_a_shutdown_is_not(
    tmp_path: Path, models: ModelCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(runner, "generate", _slow_engine(seen))
    with serving(jobs_config(tmp_path), models) as client:
        job = submit(client, iterations=3)
        wait_for(lambda: seen.get("started"), what="the job to start")
        token = {"X-Delete-Token": job["delete_token"]}
        assert client.post(f"/jobs/{job['id']}/cancel", headers=token).status_code == 200
        wait_for(lambda: "aborted" in seen, what="the run to stop")
        assert seen["aborted"] is True  # a person's cancel: at once, no state
        seen.clear()
        submit(client, iterations=3)
        wait_for(lambda: seen.get("started"), what="the second job to start")
    # The service stopped with the job running: between iterations, so its state is kept.
    assert seen["aborted"] is False
