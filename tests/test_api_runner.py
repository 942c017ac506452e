"""`api.runner.run_engine`: the GPU lock and the mapping of engine errors, with a fake engine."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from helpers import job_state, jobs_config, wait_for
from PIL import Image

import api.runner as runner
from api.app import create_app
from api.errors import RunFailed
from api.gpu import GpuBusy, GpuLock
from api.runner import WEIGHTS_FIX, run_engine
from engine import Limits, ModelCache, Result, Settings, resolve
from engine.errors import Cancelled, CheckpointError, SettingsError, WeightsError

SETTINGS = Settings.create(prompts="a lighthouse", style="pixel art", size=(32, 32), seed=1)


def raising(exc: BaseException) -> Any:
    """A fake `engine.generate` that fails with `exc`."""

    def run(settings: Settings, **kwargs: Any) -> Result:
        raise exc

    return run


def run(engine: Any, gpu: GpuLock | None = None, **kwargs: Any) -> Result:
    gpu = gpu or GpuLock()
    return run_engine(
        SETTINGS, gpu=gpu, models=ModelCache(), limits=Limits(), engine=engine, **kwargs
    )


def test_a_run_gets_the_cancel_flag_progress_and_video_and_holds_the_gpu(tmp_path: Path) -> None:
    gpu, cancel, seen = GpuLock(), threading.Event(), {}

    def engine(settings: Settings, **kwargs: Any) -> Result:
        seen.update(kwargs, busy=gpu.busy)
        image = Image.new("RGB", (32, 32))
        return Result(image, resolve(settings), [1.0], 0.0)

    def on_step(step: Any) -> None:
        pass

    result = run(engine, gpu, cancel=cancel, on_step=on_step, video_path=tmp_path / "v.mp4")
    assert result.settings.seed == 1 and seen["busy"] is True and gpu.busy is False
    assert seen["should_stop"]() is False and (cancel.set() or seen["should_stop"]()) is True
    assert seen["on_step"] is on_step and seen["video_path"] == tmp_path / "v.mp4"
    assert isinstance(seen["limits"], Limits) and isinstance(seen["models"], ModelCache)


@pytest.mark.parametrize(
    "exc", [Cancelled("cancelled at iteration 3"), SettingsError("size", "too large")]
)
def test_cancelled_and_settings_errors_pass_through(exc: Exception) -> None:
    gpu = GpuLock()
    with pytest.raises(type(exc)) as caught:
        run(raising(exc), gpu)
    assert caught.value is exc and gpu.busy is False


FAILURES = [
    (WeightsError("CLIP ViT-B/32 weights missing: no network"), "weights_missing",
     f"model weights are not available: CLIP ViT-B/32 weights missing: no network. {WEIGHTS_FIX}"),
    (CheckpointError("vq.ckpt: a TorchScript archive, not a checkpoint"), "checkpoint_invalid",
     "a model file cannot be used: vq.ckpt: a TorchScript archive, not a checkpoint"),
    (RuntimeError("boom\nTraceback details"), "engine_error", "generation failed: boom"),
    (KeyError("x"), "engine_error", "generation failed: 'x'"),
]  # fmt: skip


@pytest.mark.parametrize(("exc", "code", "detail"), FAILURES)
def test_other_failures_become_run_failed_with_a_code(
    exc: Exception, code: str, detail: str
) -> None:
    gpu = GpuLock()
    with pytest.raises(RunFailed) as caught:
        run(raising(exc), gpu)
    failed = caught.value
    status = 503 if code == "weights_missing" else 500  # the server's state, not a failure
    assert (failed.code, failed.detail, failed.status_code) == (code, detail, status)
    assert failed.__cause__ is exc and gpu.busy is False


def test_out_of_memory_frees_gpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    freed: list[bool] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))
    with pytest.raises(RunFailed) as caught:
        run(raising(torch.cuda.OutOfMemoryError("CUDA out of memory")))
    assert caught.value.code == "out_of_memory" and freed == [True]


def test_waiting_for_the_gpu_is_bounded_and_cancellable() -> None:
    gpu, cancel = GpuLock(max_waiting=0, poll_seconds=0.01), threading.Event()
    never = raising(AssertionError("must not run"))
    with gpu.slot():
        with pytest.raises(GpuBusy):
            run(never, gpu)
        cancel.set()
        with pytest.raises(Cancelled):
            run(never, gpu, cancel=cancel, bounded=False)


def test_generate_and_jobs_answer_missing_weights_with_its_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "generate", raising(WeightsError("VQGAN x checkpoint missing")))
    form = {"prompts": "a lighthouse", "style": "pixel art", "size": "32x32", "iterations": "2"}
    with TestClient(create_app(jobs_config(tmp_path))) as client:
        r = client.post("/generate", data=form)
        detail = f"model weights are not available: VQGAN x checkpoint missing. {WEIGHTS_FIX}"
        assert r.status_code == 503 and r.json() == {"error": "weights_missing", "detail": detail}
        assert "text2art models download" in detail and "--clip-model shapes" in detail
        job_id = client.post("/jobs", data=form).json()["id"]
        job = wait_for(lambda: job_state(client, job_id, "failed"), 20, "the job failing")
    assert job["error"] == detail
    assert not list(tmp_path.glob("*.png")) and not list((tmp_path / "uploads").glob("*"))


def test_a_warm_up_without_weights_is_one_line_and_shown_in_info(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runner, "generate", raising(WeightsError("CLIP ViT-B/32 weights missing")))
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(jobs_config(tmp_path, preload=True))) as client:
        wait_for(lambda: client.get("/readyz").json()["state"] != "starting", 20, "the warm-up")
        readiness = client.get("/info").json()["readiness"]
    why = "model weights are not available: CLIP ViT-B/32 weights missing"
    error = f"warm-up failed: {why}. {WEIGHTS_FIX}"
    assert readiness == {"state": "failed", "error": error}
    assert [r.exc_info for r in caplog.records if r.exc_info] == []  # no traceback in the log
    assert error in caplog.text


def test_the_gpu_lock_says_how_many_runs_are_ahead_of_a_waiter() -> None:
    gpu, done = GpuLock(poll_seconds=0.01), threading.Event()
    first, second = threading.Event(), threading.Event()

    def wait_then_hold(cancel: threading.Event) -> None:
        try:
            with gpu.slot(cancel):
                done.wait(10)
        except Cancelled:
            pass

    with gpu.slot():
        for event in (first, second):
            threading.Thread(target=wait_then_hold, args=(event,), daemon=True).start()
            wait_for(lambda e=event: gpu.position(e) is not None, 10, "a waiter in line")
        assert (gpu.position(first), gpu.position(second)) == (1, 2)
        assert gpu.position(threading.Event()) is None  # not waiting
        second.set()  # cancelled while waiting: out of the line
        wait_for(lambda: gpu.position(second) is None, 10, "the cancelled waiter gone")
        assert gpu.position(first) == 1
    wait_for(lambda: gpu.busy and gpu.position(first) is None, 10, "the first waiter holding it")
    done.set()
