"""Measurement tasks: autonn asks for ONNX models to be timed on a device, and the device's agent
leases the task, times the models and posts per-round figures back.

A lease the agent stops renewing (it died, lost its network) expires and the task goes to the next
agent that asks: a task is never lost. One leased `agent_max_attempts` times without a result fails
with that reason instead of cycling forever. Every state change is a guarded UPDATE, so two agents
can never both hold, or both finish, the same task.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import Table, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from project_manager.devices import HOST, AgentIdentity, DeviceError, Devices, Runtime, Strict, _aware
from tango.jobs import utcnow
from tango.store import InvalidKey, Store, validate_key

MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TASK_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
FINISHED = ("succeeded", "failed", "cancelled")
KEY_PREFIX = "measurements/"
Ms = Annotated[float, Field(gt=0, lt=1e7, allow_inf_nan=False)]
Dim = Annotated[int, Field(ge=1, le=65_536)]
Short = Annotated[str, Field(max_length=256)]


class ModelSpec(Strict):
    name: str = Field(pattern=MODEL_NAME)
    key: str = Field(max_length=512, description=f"store key of the ONNX file, under {KEY_PREFIX}")
    input_shape: list[Dim] = Field(min_length=1, max_length=8)


class MeasurementCreate(Strict):
    id: str | None = Field(None, pattern=TASK_ID, description="the caller's id: creating it again returns it")
    models: list[ModelSpec] = Field(min_length=1, max_length=5_000)
    runtime: Runtime = "onnxruntime-cpu"
    threads: int = Field(1, ge=1, le=256)
    rounds: int = Field(5, ge=1, le=100)
    runs_per_round: int = Field(20, ge=1, le=10_000)
    warmup: int = Field(5, ge=0, le=10_000)
    seed: int = 0

    @model_validator(mode="after")
    def _unique_names(self) -> MeasurementCreate:
        if len({m.name for m in self.models}) != len(self.models):
            raise ValueError("model names must be unique within a task")
        return self


class MeasurementPublic(BaseModel):
    id: str
    device: str
    state: str
    attempts: int
    progress: float
    message: str
    spec: dict[str, Any]
    results: dict[str, Any] | None
    error: str | None
    lease_expires_at: Any
    created_at: Any
    updated_at: Any
    finished_at: Any


class AgentFacts(Strict):
    cpu: Short
    # x86 extensions the device has (tango.agent.ISA_FLAGS): what TVM may compile its kernels for.
    cpu_flags: list[Short] = Field(default_factory=list, max_length=64)
    cores: int = Field(ge=1, le=1_000_000)
    memory_gb: float | None = Field(None, ge=0, allow_inf_nan=False)
    os: Short
    arch: str = Field(max_length=64)
    board: Short | None = None
    gpus: list[Short] = Field(default_factory=list, max_length=16)
    runtimes: list[Short] = Field(default_factory=list, max_length=32)
    timing_runtimes: list[Short] = Field(default_factory=list, max_length=32)
    max_threads: int = Field(1, ge=1, le=1_000_000)
    versions: dict[Short, Short] = Field(default_factory=dict, max_length=32)


class RegisterBody(Strict):
    device: str = Field(max_length=64)
    version: str = Field(max_length=32)
    facts: AgentFacts


class HeartbeatBody(Strict):
    task_id: str | None = Field(None, max_length=64)
    lease_id: str | None = Field(None, max_length=64)
    progress: float | None = Field(None, ge=0, le=1)
    message: str = Field("", max_length=500)


class ResultsBody(Strict):
    lease_id: str = Field(max_length=64)
    timings: dict[str, Annotated[list[Ms], Field(max_length=100)]] = Field(
        description="per model, its per-round median ms", max_length=5_000)
    noise_floor: float | None = Field(None, ge=0, allow_inf_nan=False)
    runtime: str = Field(max_length=64)
    threads: int = Field(ge=1, le=256)
    agent_version: str = Field(max_length=32)
    seconds: float = Field(ge=0, allow_inf_nan=False)


class FailureBody(Strict):
    lease_id: str = Field(max_length=64)
    error: str = Field(max_length=4_000)


class Measurements:
    def __init__(self, devices: Devices, table: Table, store: Store):
        self.devices, self.m, self.store = devices, table, store

    @property
    def max_attempts(self) -> int:
        return self.devices.settings.agent_max_attempts

    def _public(self, row: Any, device: str) -> MeasurementPublic:
        data = {k: (_aware(v) if k.endswith("_at") else v) for k, v in row._mapping.items()}
        fields = MeasurementPublic.model_fields
        return MeasurementPublic(device=device, **{k: v for k, v in data.items() if k in fields})

    def _row(self, conn: Any, device_id: str, task_id: str) -> Any:
        row = conn.execute(select(self.m).where(self.m.c.id == task_id, self.m.c.device_id == device_id)).first()
        if row is None:
            raise DeviceError(404, f"no measurement task {task_id!r} on this device")
        return row

    # --- autonn's side ----------------------------------------------------------------------------
    def create(self, device: str, body: MeasurementCreate) -> tuple[MeasurementPublic, bool]:
        """(the task, whether it was created now). Creating an existing id again returns it."""
        device_id = self.devices.device_id(device)
        if body.id is not None:
            with self.devices.db.begin() as conn:
                row = conn.execute(select(self.m).where(self.m.c.id == body.id)).first()
            if row is not None:
                if row.device_id != device_id:
                    raise DeviceError(409, f"measurement task {body.id!r} exists for another device")
                return self._public(row, device), False
        self._check(device, device_id, body)
        now, task_id = utcnow(), body.id or uuid.uuid4().hex
        try:
            with self.devices.db.begin() as conn:
                conn.execute(insert(self.m).values(id=task_id, device_id=device_id, state="queued",
                                                   spec=body.model_dump(exclude={"id"}), attempts=0, progress=0.0,
                                                   message=f"waiting for the agent on {device}", created_at=now,
                                                   updated_at=now))
        except IntegrityError:  # the same id created concurrently: that one is the task
            return self.get(device, task_id), False
        return self.get(device, task_id), True

    def _check(self, device: str, device_id: str, body: MeasurementCreate) -> None:
        if device == HOST:
            raise DeviceError(422, "the host is measured by autonn itself, not through an agent")
        facts = self.devices.agent_facts(device_id)
        if facts is None:
            raise DeviceError(422, f"no agent is registered for device {device!r}: run `tango agent --server URL "
                                   f"--device {device}` on it (its token: POST /devices/{device}/agent-token)")
        if body.runtime not in facts.get("timing_runtimes", []):
            timed = ", ".join(facts.get("timing_runtimes", [])) or "nothing"
            raise DeviceError(422, f"the agent on {device!r} times {timed}, not {body.runtime!r}")
        if body.threads > facts.get("max_threads", 1):
            raise DeviceError(422, f"the agent on {device!r} lets a task use at most {facts['max_threads']} "
                                   f"threads, not {body.threads}")
        for model in body.models:
            try:
                validate_key(model.key)
            except InvalidKey as exc:
                raise DeviceError(422, str(exc)) from None
            if not model.key.startswith(KEY_PREFIX) or not self.store.exists(model.key):
                raise DeviceError(422, f"model {model.name!r}: there is no artifact {model.key!r} under "
                                       f"{KEY_PREFIX} in the store; write the ONNX file first")

    def get(self, device: str, task_id: str) -> MeasurementPublic:
        device_id = self.devices.device_id(device)
        with self.devices.db.begin() as conn:
            return self._public(self._row(conn, device_id, task_id), device)

    def list(self, device: str, *, limit: int = 50) -> list[MeasurementPublic]:
        device_id = self.devices.device_id(device)
        with self.devices.db.begin() as conn:
            rows = conn.execute(select(self.m).where(self.m.c.device_id == device_id)
                                .order_by(self.m.c.created_at.desc()).limit(limit)).all()
        return [self._public(r, device).model_copy(update={"results": None}) for r in rows]

    def cancel(self, device: str, task_id: str) -> MeasurementPublic:
        device_id = self.devices.device_id(device)
        now = utcnow()
        with self.devices.db.begin() as conn:
            self._row(conn, device_id, task_id)
            conn.execute(update(self.m).where(self.m.c.id == task_id, self.m.c.state.in_(("queued", "leased")))
                         .values(state="cancelled", message="cancelled", updated_at=now, finished_at=now))
        return self.get(device, task_id)

    # --- the agent's side -------------------------------------------------------------------------
    def lease(self, agent: AgentIdentity) -> dict[str, Any] | None:
        """The oldest task of the agent's device that is queued or whose lease expired, now leased
        to this agent; None when there is none."""
        m, lease_for = self.m, self.devices.lease_seconds
        while True:
            now = utcnow()
            takeable = and_(m.c.device_id == agent.device_id,
                            or_(m.c.state == "queued", and_(m.c.state == "leased", m.c.lease_expires_at < now)))
            with self.devices.db.begin() as conn:
                row = conn.execute(select(m).where(takeable).order_by(m.c.created_at).limit(1)).first()
                if row is None:
                    return None
                if row.attempts >= self.max_attempts:
                    conn.execute(update(m).where(m.c.id == row.id, takeable).values(
                        state="failed", updated_at=now, finished_at=now, lease_id=None,
                        error=f"the device's agent took this task {row.attempts} times and never finished it (each "
                              f"lease of {lease_for:g} s ran out); check the agent's log on {agent.device}"))
                    continue
                lease_id = uuid.uuid4().hex
                taken = conn.execute(update(m).where(m.c.id == row.id, takeable).values(
                    state="leased", lease_id=lease_id, lease_agent_id=agent.agent_id, attempts=row.attempts + 1,
                    lease_expires_at=now + timedelta(seconds=lease_for), progress=0.0, updated_at=now,
                    message=f"leased by the agent on {agent.device} (attempt {row.attempts + 1})")).rowcount
            if taken:
                spec = row.spec
                return {"id": row.id, "lease_id": lease_id, "lease_seconds": lease_for,
                        "heartbeat_seconds": max(0.2, lease_for / 4),
                        "models": [{"name": x["name"], "input_shape": x["input_shape"]} for x in spec["models"]],
                        **{k: spec[k] for k in ("runtime", "threads", "rounds", "runs_per_round", "warmup", "seed")}}

    def _held(self, task_id: str, lease_id: str) -> Any:
        m = self.m
        return and_(m.c.id == task_id, m.c.state == "leased", m.c.lease_id == lease_id)

    def heartbeat(self, agent: AgentIdentity, body: HeartbeatBody) -> None:
        if body.task_id is None:
            return  # agent_for_token already noted that the agent is alive
        now = utcnow()
        values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=self.devices.lease_seconds),
                                  "updated_at": now}
        if body.progress is not None:
            values.update(progress=body.progress, message=body.message[:500])
        with self.devices.db.begin() as conn:
            held = conn.execute(update(self.m).where(self._held(body.task_id, body.lease_id or ""),
                                                     self.m.c.device_id == agent.device_id).values(**values)).rowcount
        if not held:
            raise DeviceError(409, f"task {body.task_id!r} is no longer leased to you (the lease expired and "
                                   "passed on, or the task ended); stop working on it")

    def model_key(self, agent: AgentIdentity, task_id: str, name: str) -> str:
        with self.devices.db.begin() as conn:
            row = self._row(conn, agent.device_id, task_id)
        if row.state != "leased":
            raise DeviceError(409, f"task {task_id!r} is {row.state}, not leased; its models are not served")
        for model in row.spec["models"]:
            if model["name"] == name:
                return model["key"]
        raise DeviceError(404, f"task {task_id!r} has no model {name!r}")

    def complete(self, agent: AgentIdentity, task_id: str, body: ResultsBody) -> MeasurementPublic:
        with self.devices.db.begin() as conn:
            row = self._row(conn, agent.device_id, task_id)
        if row.state != "leased" or row.lease_id != body.lease_id:
            raise DeviceError(409, f"task {task_id!r} is {row.state} and this lease no longer holds it (it expired "
                                   "and passed on, or the task ended); results not taken")
        spec = row.spec
        if (body.runtime, body.threads) != (spec["runtime"], spec["threads"]):
            raise DeviceError(422, f"the task asked for {spec['runtime']} with {spec['threads']} threads, "
                                   f"not {body.runtime} with {body.threads}")
        wanted = [x["name"] for x in spec["models"]]
        missing, extra = sorted(set(wanted) - set(body.timings)), sorted(set(body.timings) - set(wanted))
        if missing or extra:
            raise DeviceError(422, f"the results must time exactly the task's {len(wanted)} models: missing "
                                   f"{missing[:3]}, not in the task {extra[:3]}")
        short = [n for n, v in body.timings.items() if len(v) != spec["rounds"]]
        if short:
            raise DeviceError(422, f"every model needs {spec['rounds']} per-round figures; {short[0]!r} has "
                                   f"{len(body.timings[short[0]])}")
        now = utcnow()
        results = {**body.model_dump(exclude={"lease_id"}), "agent_id": agent.agent_id}
        with self.devices.db.begin() as conn:
            done = conn.execute(update(self.m).where(self._held(task_id, body.lease_id)).values(
                state="succeeded", results=results, progress=1.0, message="measured", updated_at=now,
                finished_at=now)).rowcount
        if not done:
            raise DeviceError(409, f"task {task_id!r} changed hands while the results arrived; results not taken")
        return self.get(agent.device, task_id)

    def fail(self, agent: AgentIdentity, task_id: str, body: FailureBody) -> MeasurementPublic:
        now = utcnow()
        with self.devices.db.begin() as conn:
            self._row(conn, agent.device_id, task_id)
            done = conn.execute(update(self.m).where(self._held(task_id, body.lease_id)).values(
                state="failed", error=f"the agent on {agent.device} reported: {body.error}", updated_at=now,
                finished_at=now, message="failed")).rowcount
        if not done:
            raise DeviceError(409, f"task {task_id!r} is no longer leased to you; the failure is not recorded")
        return self.get(agent.device, task_id)
