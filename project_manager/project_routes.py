"""Projects and their pipeline runs, for signed-in users; the labelling, model and package routes a
project needs are forwarded to the owning service after the project's access check."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import contextmanager
from typing import Any, Literal

import httpx
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from project_manager.auth import UserDep
from project_manager.pipeline import dataset_id_for
from project_manager.projects import ProjectCreate, ProjectNotFound, ProjectPublic, ProjectUpdate
from tango.client import ServiceClient, ServiceError
from tango.spec import JobState
from tango.web import RuntimeDep

router = APIRouter(prefix="/projects", tags=["projects"])


@contextmanager
def access():
    try:
        yield
    except ProjectNotFound as exc:
        raise HTTPException(404, detail=f"no project {exc.args[0]!r} that you can see") from None
    except PermissionError as exc:
        raise HTTPException(403, detail=str(exc)) from None


def _client(runtime, service: str, user=None) -> ServiceClient:  # noqa: ANN001
    client = ServiceClient(runtime.settings.service_url(service), token=runtime.settings.service_token, timeout=60)
    if user is not None:
        client.http.headers["X-Tango-User"] = user.username
    return client


def latency_range(runtime, *, device: str, task: str) -> dict[str, Any] | None:  # noqa: ANN001
    """The fastest and slowest sub-network the newest latency table of the device predicts."""
    from project_manager.pipeline_steps import SPACES

    try:
        with _client(runtime, "autonn") as autonn:
            tables = autonn.request("GET", "/latency-tables", params={"device": device, "space": SPACES[task]})
    except ServiceError:
        return None  # autonn is down: the search stage checks again
    for table in tables:
        report = table["report"] or {}
        if "fastest_ms" in report:
            return {"device": device, "fastest_ms": report["fastest_ms"], "largest_ms": report["largest_ms"],
                    "latency_table_id": table["id"], "measured_at": table["created_at"]}
    return None


def check_budget(runtime, *, device: str, task: str, budget_ms: float) -> None:  # noqa: ANN001
    """Refuse a budget below the fastest sub-network on the device, when a table says so."""
    known = latency_range(runtime, device=device, task=task)
    fastest = known["fastest_ms"] if known else None
    if fastest is not None and budget_ms < fastest:
        raise HTTPException(422, detail=f"a {budget_ms:g} ms budget is below the fastest network measured on "
                                        f"{device}, {fastest:.3g} ms; raise the budget or pick a faster device")


@router.post("", status_code=201, response_model=ProjectPublic)
def create_project(body: ProjectCreate, user: UserDep, runtime: RuntimeDep) -> ProjectPublic:
    check_budget(runtime, device=body.device, task=body.task, budget_ms=body.budget_ms)
    project = runtime.projects.create(owner=user, body=body)
    if body.dataset_id is None:
        try:
            with _client(runtime, "labelling", user) as labelling:
                labelling.request("POST", "/datasets", json={"id": dataset_id_for(project), "name": body.name,
                                                             "task": body.task, "classes": body.classes})
        except ServiceError as exc:
            runtime.projects.delete(project.id, user=user)
            raise HTTPException(502, detail=f"the labelling service could not create the project's dataset: "
                                            f"{exc.detail}") from exc
    return project


@router.get("", response_model=list[ProjectPublic])
def list_projects(user: UserDep, runtime: RuntimeDep) -> list[ProjectPublic]:
    return runtime.projects.list(user=user)


@router.get("/{project_id}", response_model=ProjectPublic)
def get_project(project_id: str, user: UserDep, runtime: RuntimeDep) -> ProjectPublic:
    with access():
        return runtime.projects.get(project_id, user=user)


@router.patch("/{project_id}", response_model=ProjectPublic)
def update_project(project_id: str, body: ProjectUpdate, user: UserDep, runtime: RuntimeDep) -> ProjectPublic:
    with access():
        current = runtime.projects.get(project_id, user=user, need="owner")
        if body.budget_ms is not None or body.device is not None:
            check_budget(runtime, device=body.device or current.device, task=current.task,
                         budget_ms=body.budget_ms or current.budget_ms)
        return runtime.projects.update(project_id, user=user, body=body)


@router.delete("/{project_id}", status_code=204)
def delete_project(project_id: str, user: UserDep, runtime: RuntimeDep) -> Response:
    with access():
        runtime.projects.delete(project_id, user=user)
    return Response(status_code=204)


class MemberCreate(BaseModel):
    username: str
    role: Literal["owner", "viewer"] = "viewer"


@router.get("/{project_id}/latency-range")
def project_latency_range(project_id: str, user: UserDep, runtime: RuntimeDep) -> dict[str, Any]:
    """What budgets make sense on the project's device: the range its latency table predicts."""
    with access():
        project = runtime.projects.get(project_id, user=user)
    known = latency_range(runtime, device=project.device, task=project.task)
    if known is None:
        raise HTTPException(404, detail=f"no latency table for {project.device} yet: the first run measures one")
    return known


@router.post("/{project_id}/members", status_code=204)
def share_project(project_id: str, body: MemberCreate, user: UserDep, runtime: RuntimeDep) -> Response:
    user_id = runtime.accounts.user_id(body.username)
    if user_id is None:
        raise HTTPException(422, detail=f"there is no user {body.username!r}")
    with access():
        runtime.projects.share(project_id, owner=user, user_id=user_id, role=body.role)
    return Response(status_code=204)


# --- runs ----------------------------------------------------------------------------------------

class RunCreate(BaseModel):
    import_job_ids: list[str] = Field(default_factory=list)


def _runs(runtime, project_id: str) -> list[Any]:  # noqa: ANN001
    # Found through the project's stage rows (indexed by project), not by scanning every project's
    # pipeline jobs: a busy server would otherwise lose older runs past the scan's limit.
    items, _ = runtime.jobs.list(kind="pipeline", ids=runtime.stages.run_ids(project_id), limit=500)
    return items


def _run(runtime, project_id: str, run_id: str):  # noqa: ANN001, ANN202
    for job in _runs(runtime, project_id):
        if job.id == run_id:
            return job
    raise HTTPException(404, detail=f"project {project_id} has no run {run_id!r}")


def _run_public(runtime, job) -> dict[str, Any]:  # noqa: ANN001
    return {**job.public().model_dump(mode="json"), "stages": [
        {k: v for k, v in s.items() if k not in ("id", "run_id", "project_id")} for s in runtime.stages.of_run(job.id)]}


def _start(runtime, project: ProjectPublic, user, **params: Any) -> dict[str, Any]:  # noqa: ANN001
    running = [j for j in _runs(runtime, project.id) if not j.state.terminal]
    if running:
        raise HTTPException(409, detail=f"run {running[0].id} of this project is still {running[0].state.value}; "
                                        "cancel it or wait for it to end")
    check_budget(runtime, device=project.device, task=project.task, budget_ms=project.budget_ms)
    job = runtime.jobs.create(kind="pipeline", params={"project_id": project.id, "user": user.username, **params})
    runtime.stages.ensure(run_id=job.id, project_id=project.id)
    runtime.enqueue(job.id)
    return _run_public(runtime, job)


@router.post("/{project_id}/runs", status_code=202)
def start_run(project_id: str, user: UserDep, runtime: RuntimeDep, body: RunCreate | None = None) -> dict[str, Any]:
    with access():
        project = runtime.projects.get(project_id, user=user, need="owner")
    return _start(runtime, project, user, import_job_ids=(body or RunCreate()).import_job_ids)


@router.get("/{project_id}/runs")
def list_runs(project_id: str, user: UserDep, runtime: RuntimeDep) -> list[dict[str, Any]]:
    with access():
        runtime.projects.get(project_id, user=user)
    return [_run_public(runtime, j) for j in _runs(runtime, project_id)]


@router.get("/{project_id}/runs/{run_id}")
def get_run(project_id: str, run_id: str, user: UserDep, runtime: RuntimeDep) -> dict[str, Any]:
    with access():
        runtime.projects.get(project_id, user=user)
    return _run_public(runtime, _run(runtime, project_id, run_id))


@router.post("/{project_id}/runs/{run_id}/cancel")
def cancel_run(project_id: str, run_id: str, user: UserDep, runtime: RuntimeDep) -> dict[str, Any]:
    with access():
        runtime.projects.get(project_id, user=user, need="owner")
    job = _run(runtime, project_id, run_id)
    if job.state.terminal:
        raise HTTPException(409, detail=f"run {run_id} already {job.state.value}; there is nothing to cancel")
    return _run_public(runtime, runtime.jobs.request_cancel(run_id))


@router.post("/{project_id}/runs/{run_id}/retry", status_code=202)
def retry_run(project_id: str, run_id: str, user: UserDep, runtime: RuntimeDep) -> dict[str, Any]:
    with access():
        project = runtime.projects.get(project_id, user=user, need="owner")
    old = _run(runtime, project_id, run_id)
    if old.state not in (JobState.failed, JobState.cancelled):
        raise HTTPException(409, detail=f"run {run_id} is {old.state.value}; only a failed or cancelled run is retried")
    return _start(runtime, project, user, retry_of=run_id)


@router.get("/{project_id}/runs/{run_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def run_events(project_id: str, run_id: str, user: UserDep, runtime: RuntimeDep,
                     request: Request) -> StreamingResponse:
    def snapshot() -> dict[str, Any]:
        with access():
            runtime.projects.get(project_id, user=user)
        return _run_public(runtime, _run(runtime, project_id, run_id))

    first = await run_in_threadpool(snapshot)

    async def stream() -> AsyncIterator[str]:
        last, current = None, first
        while True:
            text = json.dumps(current, default=str)
            if text != last:
                last = text
                yield f"event: run\ndata: {text}\n\n"
                if current["state"] in ("succeeded", "failed", "cancelled"):
                    yield f"event: end\ndata: {json.dumps({'state': current['state']})}\n\n"
                    return
            if await request.is_disconnected():
                return
            await asyncio.sleep(runtime.settings.sse_poll_seconds)
            current = await run_in_threadpool(snapshot)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/{project_id}/runs/{run_id}/report")
def run_report(project_id: str, run_id: str, user: UserDep, runtime: RuntimeDep, format: str = "json") -> Response:
    with access():
        runtime.projects.get(project_id, user=user)
    job = _run(runtime, project_id, run_id)
    if job.state is not JobState.succeeded:
        raise HTTPException(404, detail=f"run {run_id} is {job.state.value}; a report exists once it succeeds")
    if format == "html":
        return HTMLResponse(runtime.store.get_bytes(job.result["report"]["html_key"]))
    return Response(runtime.store.get_bytes(job.result["report"]["json_key"]), media_type="application/json")


# --- forwarded routes ------------------------------------------------------------------------------

async def _forward(request: Request, runtime, service: str, path: str, user) -> Response:  # noqa: ANN001
    headers = {"Authorization": f"Bearer {runtime.settings.service_token}"} if runtime.settings.service_token else {}
    headers["X-Tango-User"] = user.username
    if ctype := request.headers.get("content-type"):
        headers["Content-Type"] = ctype
    url = f"{runtime.settings.service_url(service)}{path}"
    async with httpx.AsyncClient(timeout=300) as client:
        try:
            upstream = await client.request(request.method, url, params=dict(request.query_params),
                                             content=request.stream(), headers=headers)
        except httpx.HTTPError as exc:
            raise HTTPException(502, detail=f"the {service} service did not answer: {exc}") from exc
    keep = {k: v for k, v in upstream.headers.items()
            if k.lower() in ("content-type", "content-disposition", "etag", "cache-control")}
    return Response(upstream.content, status_code=upstream.status_code, headers=keep)


@router.api_route("/{project_id}/labelling/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def labelling_proxy(project_id: str, path: str, request: Request, user: UserDep, runtime: RuntimeDep) -> Response:
    """The project's dataset at the labelling service: `/projects/{id}/labelling/images` is
    `/datasets/{dataset}/images` there. Viewers may read; only owners may change."""
    need = "viewer" if request.method == "GET" else "owner"
    with access():
        project = await run_in_threadpool(runtime.projects.get, project_id, user=user, need=need)
    if ".." in path.split("/"):
        raise HTTPException(404, detail="no such path")
    suffix = f"/{path}" if path else ""
    return await _forward(request, runtime, "labelling", f"/datasets/{dataset_id_for(project)}{suffix}", user)


@router.get("/{project_id}/imports/{job_id}")
async def import_job(project_id: str, job_id: str, request: Request, user: UserDep, runtime: RuntimeDep) -> Response:
    """An upload's import job at the labelling service (its result lists per-file errors), so the
    web UI can follow it without the service token."""
    with access():
        project = await run_in_threadpool(runtime.projects.get, project_id, user=user)
    missing = HTTPException(404, detail=f"project {project_id} has no import job {job_id!r}")
    if "/" in job_id or job_id in ("", ".", ".."):
        raise missing
    upstream = await _forward(request, runtime, "labelling", f"/jobs/{job_id}", user)
    if upstream.status_code == 200:
        job = json.loads(upstream.body)
        # Job ids are not secrets of a project: only this project's dataset's imports are shown.
        if job.get("kind") != "import" or job.get("params", {}).get("dataset_id") != dataset_id_for(project):
            raise missing
    return upstream


@router.get("/{project_id}/runs/{run_id}/packages/{name}")
async def run_package(project_id: str, run_id: str, name: str, request: Request, user: UserDep,
                      runtime: RuntimeDep) -> Response:
    """A code package of the run's model (tar.gz), by package name or target."""
    with access():
        await run_in_threadpool(runtime.projects.get, project_id, user=user)
    job = await run_in_threadpool(_run, runtime, project_id, run_id)
    codegen = runtime.stages.get(run_id, "codegen")
    model_id = (codegen["result"] or {}).get("model_id") if job else None
    if not model_id:
        raise HTTPException(404, detail=f"run {run_id} has no packages yet")
    if "/" in name or name in ("", ".", ".."):
        raise HTTPException(404, detail="no such package")
    return await _forward(request, runtime, "deploy_codegen", f"/packages/{model_id}/{name}", user)
