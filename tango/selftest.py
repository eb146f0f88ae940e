"""The `selftest` job kind every service runs: real checkpointed work through the whole Job path.

It computes a SHA-256 hash chain in steps, saving a write-once checkpoint after each step, so a
job whose worker is killed resumes where it stopped and ends with the same digest as an
uninterrupted run. It proves the queue, the worker, the DB state, progress, cancellation and the
store of a service; later issues add each service's real job kinds beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from pydantic import BaseModel, ConfigDict, Field

from tango.queue import JobContext
from tango.store import ArtifactExists


class SelftestParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(20, ge=1, le=10_000, description="number of checkpointed steps")
    rounds: int = Field(2_000, ge=1, le=1_000_000, description="SHA-256 rounds per step")
    step_seconds: float = Field(0.0, ge=0.0, le=10.0, description="extra pause per step")
    fail_at_step: int | None = Field(None, ge=1, description="raise an error at this step")


def chain_digest(*, seed: str, steps: int, rounds: int, start: int = 0, digest: str | None = None) -> str:
    value = bytes.fromhex(digest) if digest else hashlib.sha256(seed.encode()).digest()
    for step in range(start, steps):
        for _ in range(rounds):
            value = hashlib.sha256(value + step.to_bytes(4, "big")).digest()
    return value.hex()


def selftest(ctx: JobContext, params: SelftestParams) -> dict:
    """Checkpointed SHA-256 chain: proves queue, worker, progress, cancel, resume and store."""
    result_key = f"runs/{ctx.job_id}/result.json"
    if ctx.store.exists(result_key):
        # A previous attempt finished the work but died before recording it.
        return ctx.store.get_json(result_key)
    start, digest = 0, hashlib.sha256(ctx.job_id.encode()).digest().hex()
    latest = ctx.latest_checkpoint()
    if latest is not None:
        state = json.loads(latest[1])
        start, digest = state["step"], state["digest"]
    resumed_from = start
    for step in range(start, params.steps):
        if params.fail_at_step is not None and step + 1 == params.fail_at_step:
            raise RuntimeError(f"selftest asked to fail at step {step + 1}")
        digest = chain_digest(seed="", steps=step + 1, rounds=params.rounds, start=step, digest=digest)
        if params.step_seconds:
            time.sleep(params.step_seconds)
        ctx.save_checkpoint(step + 1, json.dumps({"step": step + 1, "digest": digest}).encode())
        ctx.progress((step + 1) / params.steps, f"step {step + 1}/{params.steps}")
    result = {
        "service": ctx.runtime.service,
        "digest": digest,
        "steps": params.steps,
        "resumed_from_step": resumed_from,
        "attempt": ctx.attempt,
        "worker_pid": os.getpid(),
        "artifact": ctx.store.url_for(result_key),
    }
    try:
        ctx.store.put_json(result_key, result)
    except ArtifactExists:
        return ctx.store.get_json(result_key)
    return result
