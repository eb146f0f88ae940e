"""The `system_check` job: a selftest job on every other service, over their REST APIs.

It is what `tango demo` runs until the pipeline exists: one job on the `pipeline` queue that
drives a job on each other service's queue through real HTTP, and waits for all of them.
"""

from __future__ import annotations

import json
import time

from pydantic import BaseModel, ConfigDict, Field

from tango.client import ServiceClient, ServiceError
from tango.queue import JobCancelled, JobContext
from tango.spec import JobState

CHECKED = ("labelling", "autonn", "deploy_codegen")


class SystemCheckParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(10, ge=1, le=1_000, description="selftest steps per service")
    timeout_seconds: float = Field(300.0, gt=0, le=3_600)


def _children(ctx: JobContext, clients: dict[str, ServiceClient], steps: int) -> dict[str, str]:
    # The child job ids are checkpointed: a resumed system_check follows the same jobs
    # instead of starting new ones.
    saved = ctx.latest_checkpoint("children.json")
    if saved is not None:
        return json.loads(saved[1])
    children = {name: client.create_job("selftest", {"steps": steps}).id for name, client in clients.items()}
    ctx.save_checkpoint(0, json.dumps(children).encode(), "children.json")
    return children


def system_check(ctx: JobContext, params: SystemCheckParams) -> dict:
    """Runs a selftest job on labelling, autonn and deploy_codegen over REST and waits for them."""
    token = ctx.settings.service_token
    clients = {name: ServiceClient(ctx.settings.service_url(name), token=token) for name in CHECKED}
    started = time.monotonic()
    try:
        children = _children(ctx, clients, params.steps)
        done: dict[str, dict] = {}
        while len(done) < len(children):
            if time.monotonic() - started > params.timeout_seconds:
                raise TimeoutError(f"services still busy after {params.timeout_seconds:.0f} s: "
                                   f"{', '.join(sorted(set(children) - set(done)))}")
            fraction = 0.0
            for name, job_id in children.items():
                if name in done:
                    fraction += 1.0
                    continue
                job = clients[name].get_job(job_id)
                fraction += job.progress
                if job.state.terminal:
                    done[name] = {"job_id": job_id, "state": job.state.value, "error": job.error,
                                  "digest": (job.result or {}).get("digest"),
                                  "seconds": round((job.updated_at - job.created_at).total_seconds(), 3)}
            try:
                ctx.progress(fraction / len(children), f"{len(done)}/{len(children)} services checked")
            except JobCancelled:
                for name, job_id in children.items():
                    if name not in done:
                        try:
                            clients[name].cancel_job(job_id)
                        except ServiceError:
                            pass  # it may have finished meanwhile
                raise
            if len(done) < len(children):
                time.sleep(0.25)
    finally:
        for client in clients.values():
            client.close()
    failed = {n: d for n, d in done.items() if d["state"] != JobState.succeeded.value}
    if failed:
        raise RuntimeError("; ".join(f"{n}: {d['state']} ({d['error']})" for n, d in failed.items()))
    return {"services": done, "seconds": round(time.monotonic() - started, 3)}
