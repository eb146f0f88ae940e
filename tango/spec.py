"""The pydantic contract every service speaks: service topology, Job shapes, problem details."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    queue: str
    title: str

    @property
    def api_module(self) -> str:
        return f"{self.name}.api:app"

    @property
    def celery_module(self) -> str:
        return f"{self.name}.tasks:celery_app"


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("project_manager", 8080, "pipeline", "Project manager"),
        Service("labelling", 8081, "labelling", "Labelling"),
        Service("autonn", 8082, "autonn", "AutoNN"),
        Service("deploy_codegen", 8083, "codegen", "Deploy codegen"),
    )
}


class JobState(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.succeeded, JobState.failed, JobState.cancelled})

# The only moves a job may make. `running -> running` is a redelivered task taking over
# after its worker died; `running -> queued` is the reaper handing an orphan back.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.queued: frozenset({JobState.running, JobState.cancelled, JobState.failed}),
    JobState.running: frozenset(
        {JobState.running, JobState.queued, JobState.succeeded, JobState.failed, JobState.cancelled}
    ),
    JobState.succeeded: frozenset(),
    JobState.failed: frozenset(),
    JobState.cancelled: frozenset(),
}


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    params: dict[str, Any] = Field(default_factory=dict)


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    state: JobState
    progress: float = Field(ge=0.0, le=1.0)
    message: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class JobPage(BaseModel):
    items: list[JobPublic]
    total: int


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class Health(BaseModel):
    service: str
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
