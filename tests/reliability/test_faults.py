"""Faults injected into real processes on loopback, each bounded in time: the broker restarted while
jobs run, and the database restarted under a live API. The servers are private to the test."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tango.selftest import chain_digest
from tango.settings import Settings
from tango.spec import JobState
from tests.factories import build_runtime, start_worker, stop_process, wait_until
from tests.reliability.servers import PrivatePostgres, PrivateRedis

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


def worker_env(tmp_path, redis_url: str) -> dict[str, str]:  # noqa: ANN001
    return {"TANGO_HOME": str(tmp_path / "home"), "TANGO_REDIS_URL": redis_url,
            "TANGO_HEARTBEAT_SECONDS": "0.5", "TANGO_STALE_AFTER_SECONDS": "3", "TANGO_VISIBILITY_TIMEOUT": "6"}


def settings_from(env: dict[str, str]) -> Settings:
    return Settings(**{k.removeprefix("TANGO_").lower(): v for k, v in env.items()})


def queue_selftests(runtime, n: int, **params) -> list[str]:  # noqa: ANN001
    ids = []
    for _ in range(n):
        job = runtime.jobs.create(kind="selftest", params=params)
        runtime.enqueue(job.id)
        ids.append(job.id)
    return ids


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "crash-without-persistence"])
def test_broker_restart_mid_run(tmp_path, crash):
    """Redis goes away while one job runs and others wait. A clean restart (data kept, as the compose
    image does) loses nothing. A crash of a Redis that keeps nothing loses the waiting messages: the
    reaper finds jobs still `queued` while the broker's queue is empty and sends them again. Either
    way every job ends `succeeded` with the digest of an uninterrupted run, none is left `running`,
    and no step is written twice."""
    broker = PrivateRedis(tmp_path / "redis", persist=not crash)
    broker.start()
    env = worker_env(tmp_path, broker.url)
    runtime = build_runtime("labelling", settings_from(env))
    runtime.migrate()
    params = {"steps": 12, "rounds": 100, "step_seconds": 0.1}
    ids = queue_selftests(runtime, 4, **params)
    worker = start_worker("labelling", env, tmp_path / "worker.log")
    try:
        wait_until(lambda: any(runtime.jobs.get(i).progress >= 0.25 for i in ids), timeout=60,
                   what="a job to be under way")
        broker.stop(kill=crash)
        # The worker goes on with what it holds (its state is in the DB, not the broker).
        wait_until(lambda: not runtime.jobs.ids_in_state(JobState.running), timeout=30,
                   what="running jobs to end while the broker is down")
        broker.start()
        later = queue_selftests(runtime, 2, **params)
        wait_until(lambda: all(runtime.jobs.get(i).state.terminal for i in later), timeout=90,
                   what="jobs queued after the restart to end")
        wait_until(lambda: all(runtime.jobs.get(i).state.terminal for i in ids), timeout=120,
                   what="every job from before the restart to end")
    finally:
        stop_process(worker)
        broker.stop()
    log = (tmp_path / "worker.log").read_text()[-3000:]
    jobs = {i: runtime.jobs.get(i) for i in ids + later}
    assert not runtime.jobs.ids_in_state(JobState.running), log
    for job_id, job in jobs.items():
        assert job.state is JobState.succeeded, (job_id, job.state, job.error, log)
        assert job.result["digest"] == chain_digest(seed=job_id, steps=12, rounds=100)
        steps = [int(k.split("/")[3]) for k in runtime.store.list(f"runs/{job_id}/checkpoints")]
        assert steps == list(range(1, 13))  # each step written once, none redone


def test_database_restart_answers_503_then_recovers(tmp_path):
    pg = PrivatePostgres(tmp_path / "pg")
    pg.start()
    try:
        settings = Settings(home=tmp_path / "home", database_url=pg.url, service_token="t")
        api = __import__("labelling.api", fromlist=["create_app"])
        with TestClient(api.create_app(settings), raise_server_exceptions=False) as client:
            client.headers["Authorization"] = "Bearer t"
            job = client.post("/jobs", json={"kind": "selftest", "params": {"steps": 2}}).json()
            assert client.get(f"/jobs/{job['id']}").status_code == 200
            pg.stop()
            for path in (f"/jobs/{job['id']}", "/jobs", "/datasets"):
                down = client.get(path)
                assert down.status_code == 503, down.text
                assert down.headers["content-type"] == PROBLEM and down.headers["retry-after"] == "5"
                assert down.json()["detail"] == "the database is not answering; try again shortly"
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "database" in ready.json()["detail"]
            down = client.post("/jobs", json={"kind": "selftest", "params": {"steps": 2}})
            assert down.status_code == 503 and down.headers["content-type"] == PROBLEM
            pg.start()
            # Pooled connections died with the server; the pool notices and the API recovers by itself.
            wait_until(lambda: client.get(f"/jobs/{job['id']}").status_code == 200, timeout=30,
                       what="the API to recover after PostgreSQL came back")
            assert client.get(f"/jobs/{job['id']}").json()["state"] == "queued"
            assert client.get("/readyz").json()["checks"]["database"] == "ok"
            assert client.get("/jobs").json()["total"] == 1  # the refused POST created nothing
    finally:
        pg.close()
