"""Latency of `GET /healthz` while idle clients listen to one queued job's events (SSE).

Starts the real app in a subprocess (uvicorn on a free port of 127.0.0.1, the tiny offline
models, no worker so the job stays queued), opens N event streams that read nothing more after
their first bytes, and times sequential `/healthz` requests. Prints a markdown table.

    python bench/sse.py                           # 0, 100 and 300 listeners
    python bench/sse.py --listeners 0,50 --samples 100
    python bench/sse.py --tree /tmp/old           # the server from another checkout (compare)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def serve(port: int, out: str) -> None:
    """The server side (run in the subprocess)."""
    import uvicorn

    from api.app import create_app
    from api.config import ServiceConfig

    config = ServiceConfig(
        clip_models=["tiny-random"],
        vqgan_model="tiny-random",
        device="cpu",
        output_dir=Path(out),
        preload=False,
        run_worker_in_process=False,  # the job stays queued: listeners wait on it
        rate_limit=0,
        max_listeners_per_client=1000,  # every listener of this bench comes from 127.0.0.1
    )
    uvicorn.run(create_app(config), host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(tree: Path, out: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = f"import sys; sys.path.append({str(ROOT)!r}); from bench.sse import serve; "
    code += f"serve({port}, {out!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tree, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):  # up to 60 s
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def open_listeners(url: str, job_id: str, n: int) -> list[socket.socket]:
    """`n` event streams, each established (its first bytes read), then left idle."""
    port = int(url.rsplit(":", 1)[1])
    request = f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    conns = []
    for _ in range(n):
        conn = socket.create_connection(("127.0.0.1", port), timeout=30)
        conn.sendall(request)
        conns.append(conn)
    for conn in conns:
        assert conn.recv(65536).startswith(b"HTTP/1.1 200"), "a listener was refused"
    return conns


def healthz_ms(client: httpx.Client, url: str, samples: int) -> tuple[float, float]:
    """Median and 90th percentile of `samples` sequential /healthz requests, in ms."""
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        client.get(f"{url}/healthz").raise_for_status()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), statistics.quantiles(times, n=10)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", default="0,100,300", help="comma-separated counts")
    parser.add_argument("--samples", type=int, default=200, help="/healthz requests per row")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before timing")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout the server runs from")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        proc, url = start_server(args.tree, out)
        try:
            form = {"prompts": "a lighthouse", "style": "pixel art", "size": "32x32"}
            job_id = httpx.post(f"{url}/jobs", data=form, timeout=30).json()["id"]
            print("| idle listeners | /healthz median (ms) | p90 (ms) |")
            print("|---:|---:|---:|")
            with httpx.Client(timeout=30) as client:
                for n in (int(v) for v in args.listeners.split(",")):
                    conns = open_listeners(url, job_id, n)
                    time.sleep(args.settle)
                    median, p90 = healthz_ms(client, url, args.samples)
                    print(f"| {n} | {median:.1f} | {p90:.1f} |", flush=True)
                    for conn in conns:
                        conn.close()
                    time.sleep(args.settle)
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
