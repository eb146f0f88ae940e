"""The pydantic contract every service speaks: service topology, Job shapes, problem details."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

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


# --- datasets: the contract between labelling (which freezes versions) and autonn (which trains) ---

Task = Literal["classify", "detect"]
Split = Literal["train", "val", "test"]


class BoxLabel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cls: int = Field(ge=0)
    x1: float
    y1: float
    x2: float
    y2: float


class DatasetItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="store key of the image bytes")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    split: Split
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    label: int | None = Field(None, ge=0, description="class index (classify)")
    boxes: list[BoxLabel] = Field(default_factory=list, description="pixel boxes (detect)")


class DatasetManifest(BaseModel):
    """A frozen dataset version: immutable, addressed as datasets/<id>/<version>/manifest.json."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    task: Task
    classes: list[str] = Field(min_length=1)
    items: list[DatasetItem]
    content_hash: str = ""
