"""The pipeline run: one Job on the `pipeline` queue that takes a project from its labelled data
to verified code packages. Each stage is a REST call to the owning service plus waiting on its
Job; stage state is persisted, so a redelivered run follows the same child jobs and a retry
starts at the stage that failed."""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from project_manager.projects import ProjectPublic
from project_manager.stages import FINAL, STAGES
from tango.client import ServiceClient, ServiceError
from tango.queue import JobCancelled, JobContext


class PipelineParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: str
    retry_of: str | None = Field(None, description="a failed or cancelled run whose finished stages are kept")
    import_job_ids: list[str] = Field(default_factory=list, description="labelling imports to wait for")
    user: str = "anonymous"


class StageFailed(Exception):
    pass


def precheck_pipeline(runtime, params: PipelineParams) -> None:  # noqa: ANN001
    raise HTTPException(422, detail="start a pipeline run with POST /projects/{project_id}/runs")


def dataset_id_for(project: ProjectPublic) -> str:
    return project.dataset_id or f"p-{project.id[:16]}"


class Run:
    """One pipeline run's context: the job, the project, its stages and the service clients."""

    def __init__(self, ctx: JobContext, params: PipelineParams):
        self.ctx, self.params = ctx, params
        self.runtime = ctx.runtime
        self.run_id = ctx.job_id
        self.project = self.runtime.projects.get(params.project_id, user=None)
        self.stages = self.runtime.stages
        token = ctx.settings.service_token
        self.clients = {name: ServiceClient(ctx.settings.service_url(name), token=token, timeout=60)
                        for name in ("labelling", "autonn", "deploy_codegen")}
        self.clients["labelling"].http.headers["X-Tango-User"] = params.user
        self.results: dict[str, Any] = {}
        self.position = 0

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def say(self, stage: str, message: str, fraction: float = 0.0) -> None:
        self.stages.log(self.run_id, stage, message)
        self.ctx.progress((self.position + min(max(fraction, 0.0), 1.0)) / len(STAGES), f"{stage}: {message}")

    def child(self, stage: str, service: str, kind: str, params: dict[str, Any], *,
              key: str = "main") -> tuple[str, dict[str, Any]]:
        """Start (or, after a restart, rejoin) one of the stage's jobs on `service`, wait for it,
        and return (its job id, its result)."""
        client = self.clients[service]
        job_id = self.stages.children(self.run_id, stage).get(key)
        if job_id is None:
            try:
                job_id = client.create_job(kind, params).id
            except ServiceError as exc:
                # A refused job (422) carries the service's own explanation: pass it on as it is.
                raise StageFailed(exc.detail if exc.status == 422 else str(exc)) from exc
            self.stages.remember_child(self.run_id, stage, key=key, service=service, job_id=job_id)
            self.say(stage, f"{service} job {job_id} ({kind}) started")
        last = None
        while True:
            job = client.get_job(job_id)
            try:
                if job.message != last:
                    last = job.message
                self.ctx.progress((self.position + job.progress) / len(STAGES), f"{stage}: {job.message}")
            except JobCancelled:
                try:
                    client.cancel_job(job_id)
                except ServiceError:
                    pass  # it ended meanwhile
                raise
            if job.state.terminal:
                break
            time.sleep(0.5)
        if job.state.value != "succeeded":
            raise StageFailed(f"{service} {kind} job {job_id} {job.state.value}: {job.error or job.message}")
        self.say(stage, f"{service} job {job_id} succeeded", 1.0)
        return job_id, job.result or {}


def run_pipeline(ctx: JobContext, params: PipelineParams) -> dict[str, Any]:
    """Import → freeze version → supernet → latency table → search → fine-tune → codegen → report."""
    from project_manager import pipeline_steps

    run = Run(ctx, params)
    stages = run.stages
    stages.ensure(run_id=run.run_id, project_id=run.project.id)
    if params.retry_of:
        stages.carry_over(from_run=params.retry_of, to_run=run.run_id)
    try:
        for run.position, name in enumerate(STAGES):
            row = stages.get(run.run_id, name)
            if row["state"] in FINAL:
                run.results[name] = row["result"] or {}
                continue
            stages.start(run.run_id, name)
            try:
                result = getattr(pipeline_steps, name)(run)
            except JobCancelled:
                stages.finish(run.run_id, name, state="cancelled")
                raise
            except StageFailed as exc:
                stages.log(run.run_id, name, f"failed: {exc}")
                stages.finish(run.run_id, name, state="failed", result={"error": str(exc)})
                raise RuntimeError(f"stage {name} failed: {exc}") from exc
            except ServiceError as exc:
                stages.log(run.run_id, name, f"failed: {exc}")
                stages.finish(run.run_id, name, state="failed", result={"error": str(exc)})
                raise
            state = "skipped" if result.get("skipped") else "succeeded"
            result["children"] = stages.children(run.run_id, name)
            stages.finish(run.run_id, name, state=state, result=result)
            run.results[name] = result
    finally:
        run.close()
    return {"project_id": run.project.id, "report": run.results["report"],
            "stages": {name: stages.get(run.run_id, name)["state"] for name in STAGES}}
