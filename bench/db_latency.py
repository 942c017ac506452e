"""A job's engine time against the round trip to its database (PostgreSQL through a TCP proxy
that adds a delay each way), as in a Colab worker writing to a hosted database.

Starts a throwaway PostgreSQL cluster (Debian's `postgresql`, as the tests do) and the TCP fault
proxy of the tests in front of it, then runs the same job (pixel art on the tiny offline models,
progress written every 0.05 s, a preview every 5 iterations) in this process's worker for each
delay, and reports the job's engine time (`run_seconds`: the run, from its first to its last
iteration) and its wall time (claim to recorded end). Medians of --repeats runs.

    python bench/db_latency.py                              # 0, 50, 100 and 200 ms each way
    python bench/db_latency.py --tree /tmp/old              # the service of another checkout
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def one_job(service: Any, iterations: int) -> tuple[float, float]:
    """(engine seconds, wall seconds) of one job."""
    from engine import Settings, resolve

    settings = resolve(Settings.create(prompts="a castle", style="pixel art", size=(32, 32)))
    run = settings.model_copy(update={"iterations": iterations, "clip_models": ["tiny-random"],
                                      "cutouts": 4, "seed": 1})  # fmt: skip
    from helpers import add_job

    job_id = uuid.uuid4().hex
    add_job(service.store, job_id, settings=run.to_json_dict(), total=iterations)
    start = time.perf_counter()
    service.runner.run(job_id)
    wall = time.perf_counter() - start
    job = service.store.get(job_id)
    assert job is not None and job.status == "succeeded", job
    return float(job.run_seconds), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays-ms", default="0,50,100,200")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose service runs")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree))
    sys.path.append(str(ROOT / "tests"))
    from faults import FaultProxy
    from helpers import jobs_config
    from servers import PostgresServer

    from api.services import build_services
    from engine import ModelCache

    models = ModelCache()
    server = PostgresServer()
    server.start()
    try:
        url = server.create_database()
        proxy = FaultProxy(server.port)
        behind = url.replace(f":{server.port}/", f":{proxy.port}/")
        out = Path(tempfile.mkdtemp(prefix="t2a-bench-db-"))
        service = build_services(jobs_config(out, database_url=behind), models=models).jobs
        service.store.open()
        one_job(service, 3)  # warm: the tiny CLIP, the connections
        print(f"{args.iterations} iterations, progress every 0.05 s, median of {args.repeats}; "
              f"service from {args.tree}")  # fmt: skip
        print()
        print("| delay each way (ms) | engine s | x no delay | wall s |")
        print("|---|---|---|---|")
        base = None
        for delay in (int(d) for d in args.delays_ms.split(",")):
            proxy.delay(delay / 1000)
            runs = [one_job(service, args.iterations) for _ in range(args.repeats)]
            engine = statistics.median(r[0] for r in runs)
            wall = statistics.median(r[1] for r in runs)
            base = base or engine
            print(f"| {delay} | {engine:.2f} | {engine / base:.2f} | {wall:.2f} |", flush=True)
        service.stop()
        proxy.close()
    finally:
        server.close()


if __name__ == "__main__":
    main()
