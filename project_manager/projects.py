"""Projects: what to build (task, classes, data), where it must run (device, budget) and who may see it."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Table, and_, delete, insert, select, update

from project_manager.accounts import User
from tango.db import Database
from tango.jobs import utcnow

TARGETS = ("pytorch", "onnxruntime", "tvm", "tensorrt")


class Training(BaseModel):
    """The pipeline's knobs; defaults suit a small dataset on a CPU."""

    model_config = ConfigDict(extra="forbid")

    space_options: dict[str, Any] = Field(default_factory=dict)
    supernet_epochs: int = Field(10, ge=1, le=500)
    finetune_epochs: int = Field(5, ge=0, le=500)
    batch_size: int = Field(64, ge=2, le=1024)
    lr: float | None = Field(None, gt=0, le=10, description="supernet learning rate (AdamW); default by task")
    n_random: int | None = Field(None, ge=0, le=8, description="random sub-networks per supernet training step "
                                                                "besides the largest and smallest; default by task")
    predictor_archs: int = Field(60, ge=10, le=5000)
    latency_networks: int = Field(30, ge=0, le=500)
    latency_max_age_days: float = Field(30.0, gt=0, description="reuse a latency table younger than this")
    device_compute: Literal["auto", "cpu", "cuda"] = "auto"


class ProjectBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    task: Literal["classify", "detect"]
    classes: list[str] = Field(min_length=1, max_length=1000)
    dataset_id: str | None = Field(None, max_length=64)
    dataset_version: str | None = Field(None, max_length=64)
    device: str = Field("host", min_length=1, max_length=128)
    budget_ms: float = Field(gt=0, le=1e6, description="latency budget in ms at batch 1 on the device")
    accuracy_floor: float | None = Field(None, ge=0, le=1)
    size_ceiling_mb: float | None = Field(None, gt=0)
    targets: list[str] = Field(default_factory=lambda: ["onnxruntime"])
    training: Training = Field(default_factory=Training)

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v) or any(not c.strip() for c in v):
            raise ValueError("class names must be distinct and not blank")
        return v

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in TARGETS]
        if unknown:
            raise ValueError(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
        return list(dict.fromkeys(v))


class ProjectCreate(ProjectBase):
    pass


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=128)
    dataset_id: str | None = None
    dataset_version: str | None = None
    device: str | None = None
    budget_ms: float | None = Field(None, gt=0, le=1e6)
    accuracy_floor: float | None = Field(None, ge=0, le=1)
    size_ceiling_mb: float | None = Field(None, gt=0)
    targets: list[str] | None = None
    training: Training | None = None


class ProjectPublic(ProjectBase):
    model_config = ConfigDict(extra="ignore")

    id: str
    owner_id: str
    role: str
    created_at: Any
    updated_at: Any


class ProjectNotFound(LookupError):
    pass


class Projects:
    def __init__(self, db: Database, projects: Table, members: Table):
        self.db, self.t, self.m = db, projects, members

    def create(self, *, owner: User, body: ProjectCreate) -> ProjectPublic:
        now, project_id = utcnow(), uuid.uuid4().hex
        values = body.model_dump(mode="json")
        with self.db.begin() as conn:
            conn.execute(insert(self.t).values(id=project_id, owner_id=owner.id, created_at=now, updated_at=now,
                                               **values))
            conn.execute(insert(self.m).values(project_id=project_id, user_id=owner.id, role="owner"))
        return self.get(project_id, user=owner)

    def _row(self, project_id: str) -> dict[str, Any]:
        with self.db.begin() as conn:
            row = conn.execute(select(self.t).where(self.t.c.id == project_id)).first()
        if row is None:
            raise ProjectNotFound(project_id)
        return dict(row._mapping)

    def get(self, project_id: str, *, user: User | None, need: str = "viewer") -> ProjectPublic:
        """The project as `user` may see it. A project the user has no part in is reported as
        not found, so ids of other people's projects leak nothing."""
        if user is None:
            row, role = self._row(project_id), "owner"
        else:  # the project and the user's part in it in one round trip: this runs on every project route
            member = self.m.alias()
            with self.db.begin() as conn:
                found = conn.execute(select(self.t, member.c.role.label("member_role"))
                                     .outerjoin(member, and_(member.c.project_id == self.t.c.id,
                                                             member.c.user_id == user.id))
                                     .where(self.t.c.id == project_id)).first()
            if found is None:
                raise ProjectNotFound(project_id)
            row = {k: v for k, v in found._mapping.items() if k != "member_role"}
            role = found.member_role or ("owner" if user.is_admin else None)
        if role is None:
            raise ProjectNotFound(project_id)
        if need == "owner" and role != "owner":
            raise PermissionError(f"you can view project {row['name']!r} but only its owner can change it")
        return ProjectPublic(**row, role=role)

    def list(self, *, user: User) -> list[ProjectPublic]:
        with self.db.begin() as conn:
            query = select(self.t, self.m.c.role).join(self.m, self.m.c.project_id == self.t.c.id)
            if not user.is_admin:
                query = query.where(self.m.c.user_id == user.id)
            rows = conn.execute(query.order_by(self.t.c.created_at.desc())).all()
        seen: dict[str, ProjectPublic] = {}
        for r in rows:
            seen.setdefault(r.id, ProjectPublic(**dict(r._mapping)))
        return list(seen.values())

    def update(self, project_id: str, *, user: User | None, body: ProjectUpdate) -> ProjectPublic:
        self.get(project_id, user=user, need="owner")
        values = body.model_dump(mode="json", exclude_unset=True)
        if "targets" in values:
            ProjectBase._known_targets(values["targets"])
        with self.db.begin() as conn:
            conn.execute(update(self.t).where(self.t.c.id == project_id).values(updated_at=utcnow(), **values))
        return self.get(project_id, user=user)

    def share(self, project_id: str, *, owner: User, user_id: str, role: str) -> None:
        self.get(project_id, user=owner, need="owner")
        with self.db.begin() as conn:
            conn.execute(delete(self.m).where(self.m.c.project_id == project_id, self.m.c.user_id == user_id))
            conn.execute(insert(self.m).values(project_id=project_id, user_id=user_id, role=role))

    def delete(self, project_id: str, *, user: User) -> None:
        self.get(project_id, user=user, need="owner")
        with self.db.begin() as conn:
            conn.execute(delete(self.m).where(self.m.c.project_id == project_id))
            conn.execute(delete(self.t).where(self.t.c.id == project_id))
