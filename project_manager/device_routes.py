"""Device profiles for signed-in users, measurement tasks for autonn, and the profiling agents' routes.

`/devices` sits behind the app's guard (a user token, or the service token). `/agent` does not:
every agent route checks the device's own agent token itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from project_manager.auth import UserDep
from project_manager.devices import AgentIdentity, DeviceCreate, DeviceError, DevicePublic, DeviceUpdate
from project_manager.measurements import (FailureBody, HeartbeatBody, MeasurementCreate, MeasurementPublic,
                                          RegisterBody, ResultsBody)
from tango.store import ArtifactMissing
from tango.web import RuntimeDep, is_service_call

router = APIRouter(prefix="/devices", tags=["devices"])
agent_router = APIRouter(prefix="/agent", tags=["agent"])


@contextmanager
def refusals() -> Iterator[None]:
    try:
        yield
    except DeviceError as exc:
        raise HTTPException(exc.status, detail=exc.detail) from None


async def service_only(request: Request, runtime: RuntimeDep) -> None:
    if not is_service_call(request, runtime):
        raise HTTPException(403, detail="measurement tasks are created by autonn with the service token; "
                                        "start a latency_table job on autonn instead")


# --- profiles ----------------------------------------------------------------------------------------
@router.get("", response_model=list[DevicePublic])
def list_devices(runtime: RuntimeDep) -> list[DevicePublic]:
    return runtime.devices.list()


@router.post("", status_code=201, response_model=DevicePublic)
def create_device(body: DeviceCreate, user: UserDep, runtime: RuntimeDep) -> DevicePublic:
    with refusals():
        return runtime.devices.create(body, owner=user)


@router.get("/{name}", response_model=DevicePublic)
def get_device(name: str, runtime: RuntimeDep) -> DevicePublic:
    with refusals():
        return runtime.devices.get(name)


@router.patch("/{name}", response_model=DevicePublic)
def update_device(name: str, body: DeviceUpdate, user: UserDep, runtime: RuntimeDep) -> DevicePublic:
    with refusals():
        return runtime.devices.update(name, body, user=user)


@router.delete("/{name}", status_code=204)
def delete_device(name: str, user: UserDep, runtime: RuntimeDep) -> None:
    with refusals():
        runtime.devices.delete(name, user=user)


@router.post("/{name}/agent-token", status_code=201)
def create_agent_token(name: str, user: UserDep, runtime: RuntimeDep) -> dict[str, Any]:
    """A token for the device's profiling agent, shown once; it replaces the previous one."""
    with refusals():
        return runtime.devices.issue_agent_token(name, user=user)


@router.delete("/{name}/agent-token", status_code=204)
def revoke_agent_token(name: str, user: UserDep, runtime: RuntimeDep) -> None:
    with refusals():
        runtime.devices.revoke_agent_token(name, user=user)


# --- measurement tasks (autonn) -------------------------------------------------------------------------
@router.post("/{name}/measurements", status_code=201, response_model=MeasurementPublic,
             dependencies=[Depends(service_only)])
def create_measurement(name: str, body: MeasurementCreate, runtime: RuntimeDep,
                       response: Response) -> MeasurementPublic:
    with refusals():
        task, created = runtime.measurements.create(name, body)
    if not created:
        response.status_code = 200
    return task


@router.get("/{name}/measurements", response_model=list[MeasurementPublic])
def list_measurements(name: str, runtime: RuntimeDep) -> list[MeasurementPublic]:
    with refusals():
        return runtime.measurements.list(name)


@router.get("/{name}/measurements/{task_id}", response_model=MeasurementPublic)
def get_measurement(name: str, task_id: str, runtime: RuntimeDep) -> MeasurementPublic:
    with refusals():
        return runtime.measurements.get(name, task_id)


@router.post("/{name}/measurements/{task_id}/cancel", response_model=MeasurementPublic,
             dependencies=[Depends(service_only)])
def cancel_measurement(name: str, task_id: str, runtime: RuntimeDep) -> MeasurementPublic:
    with refusals():
        return runtime.measurements.cancel(name, task_id)


# --- the agents ---------------------------------------------------------------------------------------
def current_agent(request: Request, runtime: RuntimeDep) -> AgentIdentity:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    agent = runtime.devices.agent_for_token(token.strip()) if scheme.lower() == "bearer" and token else None
    if agent is None:
        raise HTTPException(401, detail="this route is for a device's profiling agent: send 'Authorization: Bearer "
                                        "<agent token>' (POST /devices/NAME/agent-token makes one)",
                            headers={"WWW-Authenticate": "Bearer"})
    return agent


AgentDep = Annotated[AgentIdentity, Depends(current_agent)]


@agent_router.post("/register")
def register_agent(body: RegisterBody, agent: AgentDep, runtime: RuntimeDep) -> dict[str, Any]:
    with refusals():
        runtime.devices.register_agent(agent, device=body.device, facts=body.facts.model_dump())
    lease = runtime.devices.lease_seconds
    return {"device": agent.device, "agent_id": agent.agent_id, "lease_seconds": lease,
            "heartbeat_seconds": max(0.2, lease / 4)}


@agent_router.post("/lease", responses={204: {"description": "no task is waiting"}})
def lease_task(agent: AgentDep, runtime: RuntimeDep) -> Any:
    task = runtime.measurements.lease(agent)
    return task if task is not None else Response(status_code=204)


@agent_router.post("/heartbeat")
def heartbeat(body: HeartbeatBody, agent: AgentDep, runtime: RuntimeDep) -> dict[str, Any]:
    with refusals():
        runtime.measurements.heartbeat(agent, body)
    return {"ok": True, "lease_seconds": runtime.devices.lease_seconds}


@agent_router.get("/tasks/{task_id}/model/{name}", response_class=Response)
def task_model(task_id: str, name: str, agent: AgentDep, runtime: RuntimeDep) -> Response:
    """The ONNX bytes of one of the task's models: agents never reach the store themselves."""
    with refusals():
        key = runtime.measurements.model_key(agent, task_id, name)
    try:
        data = runtime.store.get_bytes(key)
    except ArtifactMissing:
        raise HTTPException(410, detail=f"the model file {key!r} of task {task_id!r} is gone from the store") from None
    return Response(data, media_type="application/octet-stream")


@agent_router.post("/tasks/{task_id}/results", response_model=MeasurementPublic)
def task_results(task_id: str, body: ResultsBody, agent: AgentDep, runtime: RuntimeDep) -> MeasurementPublic:
    with refusals():
        return runtime.measurements.complete(agent, task_id, body)


@agent_router.post("/tasks/{task_id}/failure", response_model=MeasurementPublic)
def task_failure(task_id: str, body: FailureBody, agent: AgentDep, runtime: RuntimeDep) -> MeasurementPublic:
    with refusals():
        return runtime.measurements.fail(agent, task_id, body)
