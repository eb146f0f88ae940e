"""The uniform Job resource: its table, its state machine, its kinds, and its REST routes.

Implemented once here; every service mounts `jobs_router(runtime)` and registers its kinds.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
    update,
)
from starlette.concurrency import run_in_threadpool

from tango.spec import TRANSITIONS, JobCreate, JobPage, JobPublic, JobState

if TYPE_CHECKING:
    from tango.db import Database
    from tango.runtime import ServiceRuntime


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def jobs_table_columns() -> list[Column]:
    """The Job columns, frozen here so each service's first migration creates the same table."""
    return [
        Column("id", String(32), primary_key=True),
        Column("kind", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("progress", Float, nullable=False, default=0.0),
        Column("message", Text, nullable=False, default=""),
        Column("params", JSON, nullable=False),
        Column("result", JSON, nullable=True),
        Column("error", Text, nullable=True),
        Column("cancel_requested", Boolean, nullable=False, default=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("heartbeat_at", DateTime(timezone=True), nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    ]


def jobs_table(metadata: MetaData, service: str) -> Table:
    name = f"{service}_jobs"
    return Table(
        name,
        metadata,
        *jobs_table_columns(),
        Index(f"ix_{name}_state", "state"),
        Index(f"ix_{name}_created_at", "created_at"),
    )


class IllegalTransition(Exception):
    pass


class JobNotFound(LookupError):
    pass


@dataclass
class JobRecord:
    id: str
    kind: str
    state: JobState
    progress: float
    message: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    cancel_requested: bool
    attempts: int
    heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        data = dict(row._mapping)
        data["state"] = JobState(data["state"])
        for key in ("heartbeat_at", "created_at", "updated_at"):
            data[key] = _aware(data[key])
        return cls(**data)

    def public(self) -> JobPublic:
        return JobPublic.model_validate(self, from_attributes=True)


class JobRepository:
    """All reads and writes of one service's jobs. Every state change is a guarded UPDATE, so two
    workers (or a worker and the cancel route) can never both win the same move."""

    def __init__(self, db: Database, table: Table):
        self.db = db
        self.t = table

    def create(self, *, kind: str, params: dict[str, Any]) -> JobRecord:
        now = utcnow()
        values = dict(
            id=uuid.uuid4().hex, kind=kind, state=JobState.queued.value, progress=0.0,
            message="queued", params=params, result=None, error=None, cancel_requested=False,
            attempts=0, heartbeat_at=None, created_at=now, updated_at=now,
        )
        with self.db.begin() as conn:
            conn.execute(self.t.insert().values(**values))
        return self.get(values["id"])

    def get(self, job_id: str) -> JobRecord:
        with self.db.begin() as conn:
            row = conn.execute(select(self.t).where(self.t.c.id == job_id)).first()
        if row is None:
            raise JobNotFound(job_id)
        return JobRecord.from_row(row)

    def list(self, *, limit: int = 50, offset: int = 0, state: JobState | None = None,
             kind: str | None = None, ids: Collection[str] | None = None) -> tuple[list[JobRecord], int]:
        query = select(self.t)
        count = select(func.count()).select_from(self.t)
        if ids is not None:
            in_ids = self.t.c.id.in_(list(ids))
            query, count = query.where(in_ids), count.where(in_ids)
        for column, value in ((self.t.c.state, state and state.value), (self.t.c.kind, kind)):
            if value is not None:
                query, count = query.where(column == value), count.where(column == value)
        query = query.order_by(self.t.c.created_at.desc(), self.t.c.id).limit(limit).offset(offset)
        with self.db.begin() as conn:
            rows = conn.execute(query).all()
            total = conn.execute(count).scalar_one()
        return [JobRecord.from_row(r) for r in rows], total

    def _move(self, job_id: str, to: JobState, *, where: Any = None, **values: Any) -> bool:
        sources = [s.value for s, targets in TRANSITIONS.items() if to in targets]
        stmt = update(self.t).where(self.t.c.id == job_id, self.t.c.state.in_(sources))
        if where is not None:
            stmt = stmt.where(where)
        with self.db.begin() as conn:
            done = conn.execute(stmt.values(state=to.value, updated_at=utcnow(), **values)).rowcount
        return bool(done)

    def transition(self, job_id: str, to: JobState, **values: Any) -> JobRecord:
        if not self._move(job_id, to, **values):
            current = self.get(job_id)
            raise IllegalTransition(f"job {job_id} is {current.state.value}; it cannot become {to.value}")
        return self.get(job_id)

    def claim(self, job_id: str, *, stale_after: float) -> bool:
        """Take a queued job, or a running one whose worker stopped beating (redelivery)."""
        now = utcnow()
        stale = (self.t.c.state == JobState.queued.value) | (
            self.t.c.heartbeat_at < now - timedelta(seconds=stale_after)
        )
        return self._move(job_id, JobState.running, where=stale, heartbeat_at=now,
                          attempts=self.t.c.attempts + 1, message="running")

    def heartbeat(self, job_id: str) -> None:
        with self.db.begin() as conn:
            conn.execute(update(self.t).where(self.t.c.id == job_id,
                                              self.t.c.state == JobState.running.value)
                         .values(heartbeat_at=utcnow()))

    def report(self, job_id: str, *, progress: float, message: str) -> bool:
        """Record progress; returns whether a cancel has been asked for."""
        now = utcnow()
        with self.db.begin() as conn:
            conn.execute(update(self.t).where(self.t.c.id == job_id,
                                              self.t.c.state == JobState.running.value)
                         .values(progress=min(max(progress, 0.0), 1.0), message=message[:2000],
                                 heartbeat_at=now, updated_at=now))
            flag = conn.execute(select(self.t.c.cancel_requested).where(self.t.c.id == job_id))
            return bool(flag.scalar_one())

    def request_cancel(self, job_id: str) -> JobRecord:
        job = self.get(job_id)
        if job.state is JobState.queued and self._move(
            job_id, JobState.cancelled, where=self.t.c.state == JobState.queued.value,
            message="cancelled before it started", cancel_requested=True,
        ):
            return self.get(job_id)
        if job.state.terminal:
            raise IllegalTransition(f"job {job_id} already {job.state.value}; there is nothing to cancel")
        with self.db.begin() as conn:
            conn.execute(update(self.t).where(self.t.c.id == job_id)
                         .values(cancel_requested=True, message="cancelling", updated_at=utcnow()))
        return self.get(job_id)

    def stale_running(self, *, stale_after: float) -> list[str]:
        cutoff = utcnow() - timedelta(seconds=stale_after)
        with self.db.begin() as conn:
            rows = conn.execute(select(self.t.c.id).where(
                self.t.c.state == JobState.running.value, self.t.c.heartbeat_at < cutoff)).all()
        return [r.id for r in rows]

    def queued_before(self, *, seconds: float) -> list[str]:
        cutoff = utcnow() - timedelta(seconds=seconds)
        with self.db.begin() as conn:
            rows = conn.execute(select(self.t.c.id).where(self.t.c.state == JobState.queued.value,
                                                          self.t.c.updated_at < cutoff)).all()
        return [r.id for r in rows]

    def ids_in_state(self, state: JobState) -> list[str]:
        with self.db.begin() as conn:
            return [r.id for r in conn.execute(select(self.t.c.id).where(self.t.c.state == state.value))]


Handler = Callable[..., dict[str, Any]]


# Runs in the API before a job is queued: raise HTTPException (e.g. 422 for a budget no
# sub-network can meet) so a person hears about a doomed job at once, not minutes later.
Precheck = Callable[["ServiceRuntime", BaseModel], None]


@dataclass(frozen=True)
class JobKind:
    name: str
    params: type[BaseModel]
    handler: Handler
    summary: str
    precheck: Precheck | None = None


class JobKinds:
    """The registry of job kinds one service runs: name -> params model and domain function."""

    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def register(self, name: str, params: type[BaseModel], summary: str = "",
                 precheck: Precheck | None = None) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            if name in self._kinds:
                raise ValueError(f"job kind {name!r} registered twice")
            self._kinds[name] = JobKind(name, params, fn, summary or (fn.__doc__ or "").strip(), precheck)
            return fn
        return deco

    def __getitem__(self, name: str) -> JobKind:
        return self._kinds[name]

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def validate(self, body: JobCreate, runtime: ServiceRuntime) -> dict[str, Any]:
        if body.kind not in self._kinds:
            close = difflib.get_close_matches(body.kind, self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise HTTPException(422, detail=f"unknown job kind {body.kind!r}{hint}; this service runs: "
                                            f"{', '.join(self.names())}")
        kind = self._kinds[body.kind]
        try:
            params = kind.params.model_validate(body.params)
        except ValidationError as exc:
            raise HTTPException(422, detail=f"invalid params for job kind {body.kind!r}: "
                                            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                        for e in exc.errors())) from exc
        if kind.precheck is not None:
            kind.precheck(runtime, params)
        return params.model_dump(mode="json")


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


def jobs_router(runtime: ServiceRuntime) -> APIRouter:
    router = APIRouter(prefix="/jobs", tags=["jobs"])
    repo = runtime.jobs

    def get_or_404(job_id: str) -> JobRecord:
        try:
            return repo.get(job_id)
        except JobNotFound:
            raise HTTPException(404, detail=f"no job {job_id!r} in {runtime.service}") from None

    @router.post("", status_code=202, response_model=JobPublic)
    def create_job(body: JobCreate) -> JobPublic:
        params = runtime.kinds.validate(body, runtime)
        job = repo.create(kind=body.kind, params=params)
        runtime.enqueue(job.id)
        return job.public()

    @router.get("", response_model=JobPage)
    def list_jobs(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=1_000_000_000),
                  state: JobState | None = None, kind: str | None = None) -> JobPage:
        items, total = repo.list(limit=limit, offset=offset, state=state, kind=kind)
        return JobPage(items=[j.public() for j in items], total=total)

    @router.get("/kinds")
    def list_kinds() -> list[dict[str, Any]]:
        return [{"kind": k, "summary": runtime.kinds[k].summary,
                 "params_schema": runtime.kinds[k].params.model_json_schema()}
                for k in runtime.kinds.names()]

    @router.get("/{job_id}", response_model=JobPublic)
    def get_job(job_id: str) -> JobPublic:
        return get_or_404(job_id).public()

    @router.post("/{job_id}/cancel", response_model=JobPublic)
    def cancel_job(job_id: str) -> JobPublic:
        get_or_404(job_id)
        try:
            return repo.request_cancel(job_id).public()
        except IllegalTransition as exc:
            raise HTTPException(409, detail=str(exc)) from exc

    @router.get("/{job_id}/events", response_class=StreamingResponse,
                responses={200: {"content": {"text/event-stream": {}}}})
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        await run_in_threadpool(get_or_404, job_id)
        poll = runtime.settings.sse_poll_seconds

        async def stream() -> AsyncIterator[str]:
            last = None
            idle = 0.0
            while True:
                job = await run_in_threadpool(repo.get, job_id)
                snapshot = job.public().model_dump_json()
                if snapshot != last:
                    last, idle = snapshot, 0.0
                    yield _sse("job", snapshot)
                    if job.state.terminal:
                        yield _sse("end", json.dumps({"state": job.state.value}))
                        return
                elif idle >= 15.0:
                    idle = 0.0
                    yield ": keep-alive\n\n"
                if await request.is_disconnected():
                    return
                await asyncio.sleep(poll)
                idle += poll

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return router


def create_jobs_table(op: Any, service: str) -> None:
    """For a service's first Alembic migration: the jobs table as it was first shipped."""
    name = f"{service}_jobs"
    op.create_table(name, *jobs_table_columns())
    op.create_index(f"ix_{name}_state", name, ["state"])
    op.create_index(f"ix_{name}_created_at", name, ["created_at"])


def drop_jobs_table(op: Any, service: str) -> None:
    op.drop_table(f"{service}_jobs")
