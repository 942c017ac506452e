"""Prometheus metrics (api/metrics.py) and the worker's health server (api/health_server.py).

Values are read back by parsing the exposition text, as Prometheus would, and the server is
driven over real sockets on an ephemeral port.
"""

from __future__ import annotations

import socket
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from api.health_server import HealthServer
from api.metrics import Metrics, Probes, gpu_memory_in_use


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value of one render()."""
    body, _ = metrics.render()
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """One sample of a fresh scrape, None when it is absent."""
    return scrape(metrics).get((name, tuple(sorted(labels.items()))))


def names(metrics: Metrics) -> set[str]:
    return {name for name, _ in scrape(metrics)}


# -- counters and histograms ---------------------------------------------------------------------


def test_counters_count_each_event_exactly() -> None:
    metrics = Metrics("api")
    for _ in range(3):
        metrics.submitted()
    metrics.finished("succeeded", None)
    metrics.finished("succeeded", None)
    metrics.finished("failed", None)
    metrics.requeued("dead_worker")
    metrics.requeued("dead_worker")
    metrics.requeued("shutdown")
    metrics.infra_error("database")
    jobs = {s: value(metrics, "text2art_jobs_total", status=s) for s in ("submitted", "succeeded")}
    assert jobs == {"submitted": 3.0, "succeeded": 2.0}
    assert value(metrics, "text2art_jobs_total", status="failed") == 1.0
    assert value(metrics, "text2art_jobs_total", status="cancelled") == 0.0  # present from start
    assert value(metrics, "text2art_jobs_requeued_total", reason="dead_worker") == 2.0
    assert value(metrics, "text2art_jobs_requeued_total", reason="shutdown") == 1.0
    assert value(metrics, "text2art_jobs_requeued_total", reason="reconcile") == 0.0
    assert value(metrics, "text2art_infra_errors_total", service="database") == 1.0
    assert value(metrics, "text2art_infra_errors_total", service="queue") == 0.0


def test_run_and_wait_histograms() -> None:
    metrics = Metrics("worker")
    metrics.finished("succeeded", run_seconds=3.0)
    metrics.finished("failed", run_seconds=700.0)
    metrics.finished("cancelled", run_seconds=None)  # counted, not timed
    metrics.started(wait_seconds=0.3)
    metrics.started(wait_seconds=-2.0)  # clock skew between nodes: clamped to 0
    run = "text2art_job_run_seconds"
    assert value(metrics, f"{run}_count") == 2.0
    assert value(metrics, f"{run}_sum") == 703.0
    assert value(metrics, f"{run}_bucket", le="1.0") == 0.0
    assert value(metrics, f"{run}_bucket", le="5.0") == 1.0
    assert value(metrics, f"{run}_bucket", le="600.0") == 1.0
    assert value(metrics, f"{run}_bucket", le="900.0") == 2.0
    assert value(metrics, f"{run}_bucket", le="1800.0") == 2.0
    assert value(metrics, "text2art_jobs_total", status="cancelled") == 1.0
    wait = "text2art_job_wait_seconds"
    assert value(metrics, f"{wait}_count") == 2.0
    assert value(metrics, f"{wait}_sum") == pytest.approx(0.3)
    assert value(metrics, f"{wait}_bucket", le="0.1") == 1.0
    assert value(metrics, f"{wait}_bucket", le="0.5") == 2.0


def test_role_is_exported_and_checked() -> None:
    assert value(Metrics("worker"), "text2art_process_info", role="worker") == 1.0
    assert value(Metrics("api"), "text2art_process_info", role="api") == 1.0
    with pytest.raises(ValueError, match="api, worker"):
        Metrics("gpu")


@pytest.mark.parametrize(
    ("call", "choices"),
    [
        (lambda m: m.finished("done", 1.0), "succeeded, failed, cancelled"),
        (lambda m: m.finished("submitted", None), "succeeded, failed, cancelled"),
        (lambda m: m.requeued("timeout"), "dead_worker, shutdown, outage, reconcile"),
        (lambda m: m.infra_error("redis"), "database, queue"),
    ],
)
def test_unknown_label_values_are_refused(call: Any, choices: str) -> None:
    metrics = Metrics("api")
    with pytest.raises(ValueError, match=choices):
        call(metrics)
    assert value(metrics, "text2art_jobs_total", status="succeeded") == 0.0


def test_two_instances_do_not_share_counts() -> None:
    first, second = Metrics("api"), Metrics("worker")
    first.submitted()
    first.submitted()
    second.finished("failed", 5.0)
    assert value(first, "text2art_jobs_total", status="submitted") == 2.0
    assert value(second, "text2art_jobs_total", status="submitted") == 0.0
    assert value(first, "text2art_job_run_seconds_count") == 0.0
    assert value(second, "text2art_job_run_seconds_count") == 1.0
    assert ("text2art_process_info", (("role", "api"),)) not in scrape(second)


def test_recording_is_thread_safe() -> None:
    metrics = Metrics("api")

    def work() -> None:
        for _ in range(500):
            metrics.submitted()
            metrics.started(1.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert value(metrics, "text2art_jobs_total", status="submitted") == 4000.0
    assert value(metrics, "text2art_job_wait_seconds_count") == 4000.0


def test_render_gives_the_exposition_content_type() -> None:
    body, content_type = Metrics("api").render()
    assert content_type == CONTENT_TYPE_LATEST and content_type.startswith("text/plain")
    assert b"# TYPE text2art_jobs_total counter" in body


# -- probes --------------------------------------------------------------------------------------


def test_probes_are_read_at_each_scrape() -> None:
    state = {"queued": 4, "running": 1, "live": 2, "gpu": 1024}
    probes = Probes(
        queue_depth=lambda: state["queued"],
        running=lambda: state["running"],
        live_workers=lambda: state["live"],
        gpu_memory_bytes=lambda: float(state["gpu"]),
    )
    metrics = Metrics("api", probes)
    first = scrape(metrics)
    assert first[("text2art_queue_depth", ())] == 4.0
    assert first[("text2art_jobs_running", ())] == 1.0
    assert first[("text2art_workers_live", ())] == 2.0
    assert first[("text2art_gpu_memory_bytes", ())] == 1024.0
    state.update(queued=0, running=3, live=5, gpu=2048)
    second = scrape(metrics)
    assert second[("text2art_queue_depth", ())] == 0.0
    assert second[("text2art_jobs_running", ())] == 3.0
    assert second[("text2art_workers_live", ())] == 5.0
    assert second[("text2art_gpu_memory_bytes", ())] == 2048.0


def test_missing_probes_and_no_gpu_omit_their_gauges() -> None:
    gauges = {"text2art_queue_depth", "text2art_jobs_running", "text2art_workers_live"}
    assert not (gauges | {"text2art_gpu_memory_bytes"}) & names(Metrics("worker"))
    metrics = Metrics("worker", Probes(queue_depth=lambda: 7, gpu_memory_bytes=lambda: None))
    present = names(metrics)
    assert "text2art_queue_depth" in present
    assert "text2art_gpu_memory_bytes" not in present and "text2art_jobs_running" not in present


def test_a_raising_probe_is_left_out_and_counted() -> None:
    def database_down() -> int:
        raise ConnectionError("database is down")

    metrics = Metrics("api", Probes(queue_depth=database_down, live_workers=lambda: 3))
    metrics.submitted()
    for scrapes in (1, 2):
        sample = scrape(metrics)
        assert ("text2art_queue_depth", ()) not in sample
        assert sample[("text2art_workers_live", ())] == 3.0
        assert sample[("text2art_jobs_total", (("status", "submitted"),))] == 1.0
        errors = sample[("text2art_probe_errors_total", (("probe", "queue_depth"),))]
        assert errors == float(scrapes)
        assert sample[("text2art_probe_errors_total", (("probe", "live_workers"),))] == 0.0


# -- GPU memory ----------------------------------------------------------------------------------


def fake_torch(available: bool, initialised: bool, allocated: int | Exception) -> Any:
    def memory_allocated() -> int:
        if isinstance(allocated, Exception):
            raise allocated
        return allocated

    cuda = types.SimpleNamespace(
        is_available=lambda: available,
        is_initialized=lambda: initialised,
        memory_allocated=memory_allocated,
    )
    return types.SimpleNamespace(cuda=cuda)


def test_gpu_memory_in_use_never_imports_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert gpu_memory_in_use() is None
    assert "torch" not in sys.modules


@pytest.mark.parametrize(
    ("torch", "expected"),
    [
        (fake_torch(True, True, 123_456), 123_456.0),
        (fake_torch(False, False, 1), None),
        (fake_torch(True, False, 1), None),  # CUDA present but this process never used it
        (fake_torch(True, True, RuntimeError("device lost")), None),
    ],
)
def test_gpu_memory_in_use_reads_torch_when_loaded(
    monkeypatch: pytest.MonkeyPatch, torch: Any, expected: float | None
) -> None:
    monkeypatch.setitem(sys.modules, "torch", torch)
    assert gpu_memory_in_use() == expected


# -- the health server ---------------------------------------------------------------------------


class Readiness:
    """A ready() whose answer the test sets."""

    def __init__(self) -> None:
        self.answer: tuple[bool, dict[str, Any]] | Exception = (True, {"ready": True, "jobs": 0})

    def __call__(self) -> tuple[bool, dict[str, Any]]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=5.0) as client:  # no proxy from the environment
        yield client


@pytest.fixture
def ready() -> Readiness:
    return Readiness()


@pytest.fixture
def server(ready: Readiness) -> Iterator[HealthServer]:
    metrics = Metrics("worker", Probes(queue_depth=lambda: 2))
    metrics.submitted()
    with HealthServer("127.0.0.1", 0, ready, metrics) as health:
        yield health


def url(server: HealthServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def test_healthz(server: HealthServer, http: httpx.Client) -> None:
    assert server.port > 0
    response = http.get(url(server, "/healthz"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}
    assert http.get(url(server, "/healthz?probe=1")).status_code == 200


def test_readyz_follows_the_callable(
    server: HealthServer, ready: Readiness, http: httpx.Client
) -> None:
    response = http.get(url(server, "/readyz"))
    assert (response.status_code, response.json()) == (200, {"ready": True, "jobs": 0})
    ready.answer = (False, {"ready": False, "reason": "draining"})
    response = http.get(url(server, "/readyz"))
    assert (response.status_code, response.json()) == (503, {"ready": False, "reason": "draining"})
    assert response.headers["content-type"] == "application/json"
    ready.answer = ConnectionError("database is down")
    response = http.get(url(server, "/readyz"))
    assert response.status_code == 503
    assert response.json() == {"ready": False, "error": "ConnectionError: database is down"}


def test_metrics_endpoint(server: HealthServer, http: httpx.Client) -> None:
    response = http.get(url(server, "/metrics"))
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["text2art_queue_depth"].samples[0].value == 2.0
    submitted = [s for s in families["text2art_jobs"].samples if s.name == "text2art_jobs_total"]
    assert {s.labels["status"]: s.value for s in submitted}["submitted"] == 1.0


def test_metrics_endpoint_without_metrics_is_404(ready: Readiness, http: httpx.Client) -> None:
    with HealthServer("127.0.0.1", 0, ready, None) as health:
        response = http.get(url(health, "/metrics"))
    assert (response.status_code, response.json()) == (404, {"detail": "not found"})


def test_unknown_path_and_other_methods(server: HealthServer, http: httpx.Client) -> None:
    response = http.get(url(server, "/nope"))
    assert (response.status_code, response.json()) == (404, {"detail": "not found"})
    assert response.headers["content-type"] == "application/json"
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = http.request(method, url(server, "/healthz"), content=b"{}")
        assert response.status_code == 405, method
        assert response.headers["allow"] == "GET, HEAD"


def test_head_answers_like_get_without_a_body(server: HealthServer, http: httpx.Client) -> None:
    get = http.get(url(server, "/healthz"))
    head = http.head(url(server, "/healthz"))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert http.head(url(server, "/missing")).status_code == 404
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        raw.sendall(b"HEAD /healthz HTTP/1.0\r\n\r\n")
        answer = b"".join(iter(lambda: raw.recv(4096), b""))  # until the server closes
    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"\r\n\r\n")


def test_requests_are_not_logged_to_stderr(
    server: HealthServer, http: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    http.get(url(server, "/healthz"))
    http.get(url(server, "/nope"))
    http.post(url(server, "/healthz"))
    assert capfd.readouterr().err == ""


def test_stop_frees_the_port(ready: Readiness, http: httpx.Client) -> None:
    health = HealthServer("127.0.0.1", 0, ready)
    health.start()
    with pytest.raises(RuntimeError, match="already running"):
        health.start()
    port = health.port
    assert http.get(url(health, "/healthz")).status_code == 200  # leaves a TIME_WAIT behind
    health.stop()
    health.stop()  # a second stop does nothing
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with HealthServer("127.0.0.1", port, ready) as again:
        assert again.port == port
        assert http.get(url(again, "/healthz")).status_code == 200


def test_a_taken_port_fails_at_start(server: HealthServer, ready: Readiness) -> None:
    with pytest.raises(OSError):
        HealthServer("127.0.0.1", server.port, ready).start()
