"""Each service's Job round trip through a real Celery worker on real Redis, state in real
PostgreSQL; and a worker killed mid-job whose task is redelivered (acks_late) and resumes."""

import os
import signal

import pytest
import redis
from fastapi.testclient import TestClient

from tango.selftest import chain_digest
from tango.settings import Settings
from tango.spec import SERVICES, JobState
from tests.factories import build_runtime, start_worker, stop_process, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def tango_env(tmp_path, pg_url, redis_url) -> dict[str, str]:
    return {
        "TANGO_HOME": str(tmp_path / "home"),
        "TANGO_DATABASE_URL": pg_url,
        "TANGO_REDIS_URL": redis_url,
        "TANGO_HEARTBEAT_SECONDS": "0.5",
        "TANGO_STALE_AFTER_SECONDS": "3",
        "TANGO_VISIBILITY_TIMEOUT": "4",
        "TANGO_SERVICE_TOKEN": "integration-token",
    }


def settings_from(env: dict[str, str]) -> Settings:
    return Settings(**{k.removeprefix("TANGO_").lower(): v for k, v in env.items()})


@pytest.mark.parametrize("service", list(SERVICES))
def test_job_round_trip(service, tango_env, tmp_path):
    settings = settings_from(tango_env)
    runtime = build_runtime(service, settings)
    api = __import__(f"{service}.api", fromlist=["create_app"])
    worker = start_worker(service, tango_env, tmp_path / "worker.log")
    try:
        with TestClient(api.create_app(settings)) as client:
            client.headers["Authorization"] = "Bearer integration-token"
            assert client.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}
            job = client.post("/jobs", json={"kind": "selftest", "params": {"steps": 5, "rounds": 100}}).json()
            final = wait_until(lambda: (j := client.get(f"/jobs/{job['id']}").json())["state"]
                               in ("succeeded", "failed") and j, timeout=60, what="the job to end")
        assert final["state"] == "succeeded", (tmp_path / "worker.log").read_text()[-3000:]
        assert final["result"]["digest"] == chain_digest(seed=job["id"], steps=5, rounds=100)
        assert final["result"]["worker_pid"] == worker.pid
        # The state lives in PostgreSQL, in this service's own table.
        assert runtime.db.is_postgres
        assert runtime.jobs.get(job["id"]).state is JobState.succeeded
    finally:
        stop_process(worker)


def test_killed_worker_task_is_redelivered_and_resumes(tango_env, tmp_path):
    settings = settings_from(tango_env)
    runtime = build_runtime("labelling", settings)
    runtime.migrate()
    job = runtime.jobs.create(kind="selftest", params={"steps": 40, "rounds": 200, "step_seconds": 0.15})
    runtime.enqueue(job.id)
    first = start_worker("labelling", tango_env, tmp_path / "worker1.log")
    try:
        wait_until(lambda: runtime.jobs.get(job.id).progress >= 0.25, timeout=60, what="progress")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        killed_at = runtime.jobs.get(job.id)
        assert killed_at.state is JobState.running and killed_at.progress < 1.0
        # acks_late: the message was delivered but never acknowledged, so Redis still holds it.
        assert redis.Redis.from_url(settings.redis_url).hlen("unacked") >= 1
    finally:
        stop_process(first)
    second = start_worker("labelling", tango_env, tmp_path / "worker2.log")
    try:
        done = wait_until(lambda: (j := runtime.jobs.get(job.id)).state.terminal and j, timeout=90,
                          what="the redelivered job to end")
    finally:
        stop_process(second)
    assert done.state is JobState.succeeded, (tmp_path / "worker2.log").read_text()[-3000:]
    assert done.attempts >= 2 and done.result["worker_pid"] == second.pid
    assert 0 < done.result["resumed_from_step"] < 40
    # Identical to an uninterrupted run, and no step was written twice.
    assert done.result["digest"] == chain_digest(seed=job.id, steps=40, rounds=200)
    steps = [int(k.split("/")[3]) for k in runtime.store.list(f"runs/{job.id}/checkpoints")]
    assert steps == list(range(1, 41))
