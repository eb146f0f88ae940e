"""API load through the embedded stack: fixed-rate mixed reads, then a queue of tiny jobs drained.

    python bench/api_load.py --own-redis          # 200 req/s for 60 s, 1,000 jobs (SQLite, a private Redis)
    python bench/api_load.py                      # the same on the filesystem broker (no server at all)
    python bench/api_load.py --seconds 10 --jobs 100           # a quick look
    python bench/api_load.py --redis redis://127.0.0.1:6379/14 --database postgresql+psycopg://...

The stack is `tango.embedded.EmbeddedStack` running project_manager only (its API under uvicorn
and its Celery worker), by default on what `tango up` uses: SQLite and kombu's filesystem broker.

Reads: an admin's token on GET /projects, /projects/{id}, /projects/{id}/runs, /jobs/{id} and
/jobs?limit=20, in turn, sent on a fixed schedule (request i at t0 + i/rps, whatever the answers
before it did). Latency counts from the scheduled time, so a slow server cannot hide behind a
client that waits for it (coordinated omission). An error is a non-2xx answer, a transport error,
or a request not sent because `--max-in-flight` were already waiting.

Jobs: `--jobs` selftest jobs (1 step, 50 rounds) queued through POST /jobs, then drained by the
worker. Lost: a job that did not end `succeeded` within `--drain-timeout`. Run twice: a job the DB
says was claimed more than once (attempts > 1), or whose result artifact records an attempt other
than the first or a worker that did not record it (the result is write-once in the store, so a
second run cannot overwrite it, only show up as attempts > 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write_result  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def fixed_rate(base: str, headers: dict, paths: list[str], *, rps: float, seconds: float,
                     max_in_flight: int) -> dict:
    total = int(rps * seconds)
    latencies: list[float] = []
    service: list[float] = []
    errors: dict[str, int] = {}
    in_flight = 0
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10, limits=limits) as client:
        async def one(path: str, scheduled: float) -> None:
            nonlocal in_flight
            in_flight += 1
            sent = time.perf_counter()
            try:
                resp = await client.get(path)
                if not 200 <= resp.status_code < 300:
                    error(f"http {resp.status_code}")
            except httpx.HTTPError as exc:
                error(type(exc).__name__)
            finally:
                in_flight -= 1
            done = time.perf_counter()
            latencies.append((done - scheduled) * 1000)
            service.append((done - sent) * 1000)

        tasks = []
        t0 = time.perf_counter() + 0.1
        for i in range(total):
            scheduled = t0 + i / rps
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                error("not sent: too many in flight")
                continue
            tasks.append(asyncio.create_task(one(paths[i % len(paths)], scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    return {"requests": total, "achieved_rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2),
            "max_ms": round(max(latencies, default=float("nan")), 2),
            "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
            "service_p99_ms": round(percentile(service, 99), 2), "errors": sum(errors.values()),
            "error_kinds": errors}


def drain(base: str, headers: dict, runtime, *, jobs: int, timeout: float) -> dict:  # noqa: ANN001
    from tango.spec import JobState

    ids: list[str] = []
    t0 = time.perf_counter()
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for _ in range(jobs):
            resp = client.post("/jobs", json={"kind": "selftest", "params": {"steps": 1, "rounds": 50}})
            resp.raise_for_status()
            ids.append(resp.json()["id"])
    queued_s = time.perf_counter() - t0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not runtime.jobs.ids_in_state(JobState.queued) and not runtime.jobs.ids_in_state(JobState.running):
            break
        time.sleep(0.5)
    drained_s = time.perf_counter() - t0
    lost, twice, states = [], [], {}
    for job_id in ids:
        job = runtime.jobs.get(job_id)
        states[job.state.value] = states.get(job.state.value, 0) + 1
        if job.state is not JobState.succeeded:
            lost.append(job_id)
            continue
        key = f"runs/{job_id}/result.json"
        stored = runtime.store.get_json(key) if runtime.store.exists(key) else None
        if job.attempts > 1 or stored is None or stored.get("attempt") != 1 or stored != job.result:
            twice.append(job_id)
    return {"jobs_queued": jobs, "jobs_lost": len(lost), "jobs_run_twice": len(twice), "job_states": states,
            "queue_seconds": round(queued_s, 1), "drain_seconds": round(drained_s, 1),
            "jobs_per_second": round(jobs / drained_s, 1), "lost_ids": lost[:10], "run_twice_ids": twice[:10]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rps", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--max-in-flight", type=int, default=100)
    parser.add_argument("--drain-timeout", type=float, default=600)
    parser.add_argument("--redis", default=None, help="TANGO_REDIS_URL (default: filesystem broker)")
    parser.add_argument("--own-redis", action="store_true",
                        help="start a private redis-server on a free port as the broker (the filesystem "
                             "broker polls once a second, which caps draining at a few jobs per second)")
    parser.add_argument("--database", default=None, help="TANGO_DATABASE_URL (default: SQLite)")
    parser.add_argument("--result", default="api_load", help="results file name under bench/results/")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="tango-api-load-"))
    for key in [k for k in os.environ if k.startswith("TANGO_")]:
        del os.environ[key]
    os.environ.update({"TANGO_HOME": str(home), "TANGO_PROJECT_MANAGER_URL": f"http://127.0.0.1:{free_port()}",
                       # peers are not started; a call to them is refused at once
                       "TANGO_AUTONN_URL": f"http://127.0.0.1:{free_port()}",
                       "TANGO_LABELLING_URL": f"http://127.0.0.1:{free_port()}"})
    redis_proc = None
    if args.own_redis:
        import subprocess

        port = free_port()
        redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no"], stdout=subprocess.DEVNULL, start_new_session=True)
        args.redis = f"redis://127.0.0.1:{port}/0"
        for _ in range(50):
            try:
                import redis

                redis.Redis.from_url(args.redis).ping()
                break
            except Exception:
                time.sleep(0.1)
    if args.redis:
        os.environ["TANGO_REDIS_URL"] = args.redis
    if args.database:
        os.environ["TANGO_DATABASE_URL"] = args.database

    from project_manager.runtime import build_runtime
    from tango.embedded import EmbeddedStack
    from tango.settings import Settings

    settings = Settings()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    stack = EmbeddedStack(settings, services=["project_manager"])
    stack.start(timeout=120)
    base = settings.service_url("project_manager")
    try:
        creds = {"username": "bench", "password": "correct horse battery"}
        httpx.post(f"{base}/auth/register", json=creds, timeout=30).raise_for_status()
        token = httpx.post(f"{base}/auth/token", json=creds, timeout=30).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}  # the first user: an administrator
        projects = []
        for i in range(5):
            body = {"name": f"p{i}", "task": "classify", "classes": ["a", "b"], "dataset_id": f"d{i}",
                    "budget_ms": 10}
            resp = httpx.post(f"{base}/projects", json=body, headers=headers, timeout=30)
            resp.raise_for_status()
            projects.append(resp.json()["id"])
        job = httpx.post(f"{base}/jobs", headers=headers, timeout=30,
                         json={"kind": "selftest", "params": {"steps": 1, "rounds": 1}}).json()
        paths = ["/projects", *(f"/projects/{p}" for p in projects[:2]), f"/projects/{projects[0]}/runs",
                 f"/jobs/{job['id']}", "/jobs?limit=20"]
        print(f"load: {args.rps:g} req/s for {args.seconds:g} s on {len(paths)} read routes ...", flush=True)
        load = asyncio.run(fixed_rate(base, headers, paths, rps=args.rps, seconds=args.seconds,
                                      max_in_flight=args.max_in_flight))
        print(f"  p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, errors {load['errors']} {load['error_kinds']}")
        print(f"queue: {args.jobs} selftest jobs ...", flush=True)
        runtime = build_runtime(settings)
        jobs = drain(base, headers, runtime, jobs=args.jobs, timeout=args.drain_timeout)
        print(f"  drained in {jobs['drain_seconds']} s: lost {jobs['jobs_lost']}, run twice {jobs['jobs_run_twice']}, "
              f"states {jobs['job_states']}")
    finally:
        stack.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
    write_result(args.result, {
        "rps": args.rps, "seconds": args.seconds, "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"],
        "errors": load["errors"], **{k: v for k, v in load.items() if k not in ("p50_ms", "p99_ms", "errors")},
        **jobs, "goal_p99_ms": 50, "load_avg_at_start": load_at_start,
        "stack": {"runner": "tango.embedded.EmbeddedStack", "services": ["project_manager"],
                  "database": "postgresql" if args.database else "sqlite",
                  "broker": ("private redis-server" if args.own_redis else "redis") if args.redis else "filesystem", "worker_concurrency": settings.worker_concurrency},
    })


if __name__ == "__main__":
    main()
