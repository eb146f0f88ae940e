"""The Job state machine, its repository and the worker-side execution, on a real SQLite file."""

import json
from datetime import timedelta

import pytest
from sqlalchemy import update

from tango.jobs import IllegalTransition, JobNotFound, utcnow
from tango.queue import JobCancelled, JobContext, execute, reap_once
from tango.selftest import chain_digest
from tango.spec import JobState
from tests.factories import build_runtime


@pytest.fixture
def runtime(settings):
    rt = build_runtime("labelling", settings)
    rt.migrate()
    return rt


def _age_heartbeat(runtime, job_id, seconds):
    with runtime.db.begin() as conn:
        conn.execute(update(runtime.table).where(runtime.table.c.id == job_id)
                     .values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def test_create_get_list(runtime):
    job = runtime.jobs.create(kind="selftest", params={"steps": 2})
    assert job.state is JobState.queued and job.progress == 0.0
    assert runtime.jobs.get(job.id).params == {"steps": 2}
    items, total = runtime.jobs.list(state=JobState.queued)
    assert total == 1 and items[0].id == job.id
    with pytest.raises(JobNotFound):
        runtime.jobs.get("nope")


def test_only_one_claim_wins_until_the_heartbeat_goes_stale(runtime):
    job = runtime.jobs.create(kind="selftest", params={})
    assert runtime.jobs.claim(job.id, stale_after=30)
    assert not runtime.jobs.claim(job.id, stale_after=30)
    _age_heartbeat(runtime, job.id, 60)
    assert runtime.jobs.claim(job.id, stale_after=30)
    assert runtime.jobs.get(job.id).attempts == 2


def test_illegal_transitions_are_refused(runtime):
    job = runtime.jobs.create(kind="selftest", params={})
    with pytest.raises(IllegalTransition, match="queued"):
        runtime.jobs.transition(job.id, JobState.succeeded)
    runtime.jobs.claim(job.id, stale_after=30)
    runtime.jobs.transition(job.id, JobState.succeeded, result={"ok": True})
    for target in JobState:
        with pytest.raises(IllegalTransition):
            runtime.jobs.transition(job.id, target)


def test_cancel_queued_is_immediate_and_running_is_cooperative(runtime):
    queued = runtime.jobs.create(kind="selftest", params={})
    assert runtime.jobs.request_cancel(queued.id).state is JobState.cancelled
    with pytest.raises(IllegalTransition, match="nothing to cancel"):
        runtime.jobs.request_cancel(queued.id)

    running = runtime.jobs.create(kind="selftest", params={})
    runtime.jobs.claim(running.id, stale_after=30)
    assert runtime.jobs.request_cancel(running.id).state is JobState.running
    ctx = JobContext(runtime, running.id, attempt=1)
    with pytest.raises(JobCancelled):
        ctx.progress(0.5, "half")


def test_execute_runs_the_selftest_to_the_expected_digest(runtime):
    job = runtime.jobs.create(kind="selftest", params={"steps": 4, "rounds": 50})
    assert execute(runtime, job.id) == "succeeded"
    done = runtime.jobs.get(job.id)
    assert done.state is JobState.succeeded and done.progress == 1.0
    assert done.result["digest"] == chain_digest(seed=job.id, steps=4, rounds=50)
    assert runtime.store.get_json(f"runs/{job.id}/result.json") == done.result
    # Idempotent: a second delivery of the same message changes nothing.
    assert execute(runtime, job.id) == "succeeded"
    assert runtime.jobs.get(job.id).updated_at == done.updated_at


def test_execute_resumes_from_the_last_checkpoint(runtime):
    job = runtime.jobs.create(kind="selftest", params={"steps": 6, "rounds": 30})
    # A previous attempt got through 3 steps, then its worker died.
    runtime.jobs.claim(job.id, stale_after=30)
    ctx = JobContext(runtime, job.id, attempt=1)
    digest = chain_digest(seed=job.id, steps=3, rounds=30)
    ctx.save_checkpoint(3, json.dumps({"step": 3, "digest": digest}).encode())
    _age_heartbeat(runtime, job.id, 120)
    assert execute(runtime, job.id) == "succeeded"
    result = runtime.jobs.get(job.id).result
    assert result["resumed_from_step"] == 3 and result["attempt"] == 2
    assert result["digest"] == chain_digest(seed=job.id, steps=6, rounds=30)
    # Steps 1-3 were not redone: only the given checkpoint and steps 4-6 exist.
    steps = [int(k.split("/")[3]) for k in runtime.store.list(f"runs/{job.id}/checkpoints")]
    assert steps == [3, 4, 5, 6]


def test_execute_leaves_a_job_held_by_a_live_worker_alone(runtime):
    job = runtime.jobs.create(kind="selftest", params={"steps": 2})
    runtime.jobs.claim(job.id, stale_after=30)
    assert execute(runtime, job.id) == "held-elsewhere"
    assert runtime.jobs.get(job.id).state is JobState.running


def test_a_failing_job_records_its_error(runtime):
    job = runtime.jobs.create(kind="selftest", params={"steps": 5, "rounds": 1, "fail_at_step": 2})
    assert execute(runtime, job.id) == "failed"
    failed = runtime.jobs.get(job.id)
    assert failed.state is JobState.failed
    assert failed.error == "RuntimeError: selftest asked to fail at step 2"


def test_missing_job_is_dropped(runtime):
    assert execute(runtime, "0" * 32) == "missing"


def test_reaper_hands_back_jobs_whose_worker_stopped_beating(runtime):
    fresh = runtime.jobs.create(kind="selftest", params={})
    orphan = runtime.jobs.create(kind="selftest", params={})
    for job in (fresh, orphan):
        runtime.jobs.claim(job.id, stale_after=30)
    _age_heartbeat(runtime, orphan.id, 3600)
    assert reap_once(runtime) == [orphan.id]
    assert runtime.jobs.get(orphan.id).state is JobState.queued
    assert runtime.jobs.get(fresh.id).state is JobState.running
    queued = list((runtime.settings.broker_folder / "queue").glob("*.msg"))
    assert len(queued) == 1 and orphan.id in queued[0].read_text()
