"""Device profiles (the seeded ones and users' own) and the per-device tokens of profiling agents.

A profile says what the hardware is, which runtimes it has and how much of that we could check.
Its latency is `measured` when an agent is registered for it (the host always is: autonn times it
itself) and otherwise comes from a latency `table` imported for it.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from project_manager.accounts import User, token_hash
from tango.db import Database
from tango.jobs import utcnow

RUNTIMES = {
    "onnxruntime-cpu": "ONNX Runtime, CPU execution provider",
    "onnxruntime-cuda": "ONNX Runtime, CUDA execution provider",
    "pytorch-cpu": "PyTorch eager on the CPU",
    "pytorch-cuda": "PyTorch eager on an NVIDIA GPU",
    "tvm-llvm": "Apache TVM compiled for the CPU (LLVM)",
    "tvm-cuda": "Apache TVM compiled for an NVIDIA GPU",
    "tensorrt": "NVIDIA TensorRT engine",
}
Runtime = Literal[tuple(RUNTIMES)]  # type: ignore[valid-type]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
HOST = "host"
AGENT_TOKEN_PREFIX = "tgd_"
NOT_VERIFIED = "not verified: no such device reachable from CI"
DECLARED = "not verified: declared by its owner"
SEEDS: tuple[dict[str, Any], ...] = (
    {"name": "x86-server-cpu", "description": "A typical x86-64 server CPU (Xeon or EPYC class, AVX2/AVX-512).",
     "cpu": "x86-64 server CPU (AVX2/AVX-512)", "os": "Linux", "arch": "x86_64",
     "runtimes": ["onnxruntime-cpu", "pytorch-cpu", "tvm-llvm"]},
    {"name": "nvidia-h100", "description": "An NVIDIA H100 datacenter GPU (80 GB) in an x86-64 server.",
     "cpu": "x86-64 server CPU", "gpu": "NVIDIA H100 80GB HBM3", "os": "Linux", "arch": "x86_64",
     "runtimes": ["onnxruntime-cpu", "onnxruntime-cuda", "pytorch-cuda", "tvm-cuda", "tensorrt"]},
    {"name": "jetson-orin", "description": "NVIDIA Jetson AGX Orin 64 GB developer kit (JetPack 6).",
     "cpu": "12-core Arm Cortex-A78AE", "gpu": "NVIDIA Ampere, 2048 CUDA cores, 64 Tensor cores",
     "accelerator": "2x NVDLA v2", "memory_gb": 64.0, "os": "Linux (JetPack 6)", "arch": "aarch64",
     "runtimes": ["onnxruntime-cpu", "onnxruntime-cuda", "pytorch-cuda", "tensorrt", "tvm-cuda"]},
    {"name": "raspberry-pi-5", "description": "Raspberry Pi 5, 8 GB, 64-bit Raspberry Pi OS.",
     "cpu": "Broadcom BCM2712, 4x Arm Cortex-A76 @ 2.4 GHz", "memory_gb": 8.0,
     "os": "Linux (Raspberry Pi OS, 64-bit)", "arch": "aarch64",
     "runtimes": ["onnxruntime-cpu", "pytorch-cpu", "tvm-llvm"]},
)
_HOST_VERIFIED = {"onnxruntime-cpu": "verified: autonn times the host itself with ONNX Runtime (CPU)",
                  "pytorch-cpu": "verified here: PyTorch is installed on the host",
                  "tvm-llvm": "verified here: Apache TVM (LLVM) is installed on the host"}


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class DeviceError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceCreate(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, '.', '_', '-'; unique")
    description: str = Field("", max_length=2000)
    cpu: str = Field("", max_length=256)
    gpu: str | None = Field(None, max_length=256)
    accelerator: str | None = Field(None, max_length=256)
    memory_gb: float | None = Field(None, gt=0, le=1e6)
    os: str = Field("", max_length=128)
    arch: str = Field("", max_length=32)
    runtimes: list[Runtime] = Field(default_factory=lambda: ["onnxruntime-cpu"], min_length=1,
                                    max_length=len(RUNTIMES))


class DeviceUpdate(Strict):
    description: str | None = Field(None, max_length=2000)
    cpu: str | None = Field(None, max_length=256)
    gpu: str | None = Field(None, max_length=256)
    accelerator: str | None = Field(None, max_length=256)
    memory_gb: float | None = Field(None, gt=0, le=1e6)
    os: str | None = Field(None, max_length=128)
    arch: str | None = Field(None, max_length=32)
    runtimes: list[Runtime] | None = Field(None, min_length=1, max_length=len(RUNTIMES))


class AgentPublic(BaseModel):
    registered: bool
    online: bool
    token_created_at: Any
    registered_at: Any = None
    last_seen_at: Any = None
    facts: dict[str, Any] | None = None


class DevicePublic(BaseModel):
    name: str
    description: str
    cpu: str
    gpu: str | None
    accelerator: str | None
    memory_gb: float | None
    os: str
    arch: str
    runtimes: list[str]
    latency: Literal["measured", "table"]
    verified: dict[str, str]
    seeded: bool
    owner_id: str | None
    facts: dict[str, Any] | None
    agent: AgentPublic | None
    created_at: Any
    updated_at: Any


@dataclass(frozen=True)
class AgentIdentity:
    agent_id: str
    device_id: str
    device: str


def host_profile() -> dict[str, Any]:
    from tango.agent import device_facts

    facts = device_facts(import_runtimes=False)
    runtimes = ["onnxruntime-cpu"] + [r for r in facts["runtimes"] if r in _HOST_VERIFIED and r != "onnxruntime-cpu"]
    return {"name": HOST,
            "description": "The machine running Tango's autonn worker: always measured, by autonn itself.",
            "cpu": facts["cpu"], "memory_gb": facts["memory_gb"], "os": facts["os"], "arch": facts["arch"],
            "runtimes": runtimes, "verified": {r: _HOST_VERIFIED[r] for r in runtimes}, "facts": facts}


class Devices:
    def __init__(self, db: Database, tables: dict[str, Table], *, settings: Any):
        self.db, self.t, self.a = db, tables["devices"], tables["device_agents"]
        self.settings = settings
        self._seeded, self._lock = False, threading.Lock()

    @property
    def lease_seconds(self) -> float:
        return self.settings.agent_lease_seconds

    # --- seeds: upserted on first use, so a newer Tango refreshes them -----------------------------
    def ensure_seeds(self) -> None:
        with self._lock:
            if self._seeded:
                return
            # Shipped profiles carry no facts (their agent, once registered, reports them); the
            # host's are detected here, on every start.
            seeds = [host_profile()] + [{"gpu": None, "accelerator": None, "memory_gb": None,
                                         "verified": dict.fromkeys(s["runtimes"], NOT_VERIFIED), **s} for s in SEEDS]
            for seed in seeds:
                now = utcnow()
                try:
                    with self.db.begin() as conn:
                        row = conn.execute(select(self.t).where(self.t.c.name == seed["name"])).first()
                        if row is None:
                            conn.execute(insert(self.t).values(id=uuid.uuid4().hex, seeded=True, owner_id=None,
                                                               created_at=now, updated_at=now, **seed))
                        elif row.seeded and any(getattr(row, k) != v for k, v in seed.items()):
                            conn.execute(update(self.t).where(self.t.c.id == row.id).values(updated_at=now, **seed))
                except IntegrityError:
                    pass  # another process seeded it first
            self._seeded = True

    # --- profiles ---------------------------------------------------------------------------------
    def _row(self, conn: Any, name: str) -> Any:
        row = conn.execute(select(self.t).where(self.t.c.name == name)).first()
        if row is None:
            raise DeviceError(404, f"no device profile {name!r}; list them with GET /devices")
        return row

    def _public(self, row: Any, agent: Any) -> DevicePublic:
        data = {k: (_aware(v) if k.endswith("_at") else v) for k, v in row._mapping.items()}
        verified = dict(data.pop("verified"))
        agent_public = None
        if agent is not None:
            last_seen = _aware(agent.last_seen_at)
            window = timedelta(seconds=max(60.0, 2 * self.lease_seconds))
            online = last_seen is not None and utcnow() - last_seen < window
            agent_public = AgentPublic(registered=agent.registered_at is not None, online=online,
                                       token_created_at=_aware(agent.created_at),
                                       registered_at=_aware(agent.registered_at), last_seen_at=last_seen,
                                       facts=agent.facts)
            for rt in (agent.facts or {}).get("timing_runtimes", []):
                if rt in data["runtimes"]:
                    verified[rt] = "measured by its agent"
        measured = data["name"] == HOST or bool(agent_public and agent_public.registered)
        return DevicePublic(**{k: v for k, v in data.items() if k in DevicePublic.model_fields}, verified=verified,
                            latency="measured" if measured else "table", agent=agent_public)

    def _agent_rows(self, conn: Any) -> dict[str, Any]:
        rows = conn.execute(select(self.a).where(self.a.c.revoked.is_(False))).all()
        return {r.device_id: r for r in rows}

    def list(self) -> list[DevicePublic]:
        self.ensure_seeds()
        with self.db.begin() as conn:
            agents = self._agent_rows(conn)
            rows = conn.execute(select(self.t).order_by(self.t.c.seeded.desc(), self.t.c.name)).all()
        return [self._public(r, agents.get(r.id)) for r in rows]

    def get(self, name: str) -> DevicePublic:
        self.ensure_seeds()
        with self.db.begin() as conn:
            row = self._row(conn, name)
            agent = self._agent_rows(conn).get(row.id)
        return self._public(row, agent)

    def device_id(self, name: str) -> str:
        self.ensure_seeds()
        with self.db.begin() as conn:
            return self._row(conn, name).id

    def create(self, body: DeviceCreate, *, owner: User) -> DevicePublic:
        self.ensure_seeds()
        now = utcnow()
        values = body.model_dump()
        values["verified"] = dict.fromkeys(body.runtimes, DECLARED)
        try:
            with self.db.begin() as conn:
                conn.execute(insert(self.t).values(id=uuid.uuid4().hex, seeded=False, owner_id=owner.id, facts=None,
                                                   created_at=now, updated_at=now, **values))
        except IntegrityError:
            raise DeviceError(409, f"a device profile named {body.name!r} exists; pick another name") from None
        return self.get(body.name)

    def _may_manage(self, row: Any, user: User, *, agent: bool = False) -> None:
        if row.seeded and not agent:
            raise DeviceError(403, f"{row.name!r} is a profile shipped with Tango and is read-only; create your "
                                   "own profile (POST /devices) to describe a variant")
        if row.seeded and not user.is_admin:
            raise DeviceError(403, f"only an administrator may register an agent for the shipped profile {row.name!r}")
        if not row.seeded and row.owner_id != user.id and not user.is_admin:
            raise DeviceError(403, f"only the owner of {row.name!r} (or an administrator) may change it")

    def update(self, name: str, body: DeviceUpdate, *, user: User) -> DevicePublic:
        self.ensure_seeds()
        # null clears what may be unknown (gpu, accelerator, memory); the rest keep their value
        changes = {k: v for k, v in body.model_dump(exclude_unset=True).items()
                   if v is not None or k in ("gpu", "accelerator", "memory_gb")}
        with self.db.begin() as conn:
            row = self._row(conn, name)
            self._may_manage(row, user)
            if "runtimes" in changes:
                old = row.verified or {}
                changes["verified"] = {r: old.get(r, DECLARED) for r in changes["runtimes"]}
            conn.execute(update(self.t).where(self.t.c.id == row.id).values(updated_at=utcnow(), **changes))
        return self.get(name)

    def delete(self, name: str, *, user: User) -> None:
        self.ensure_seeds()
        with self.db.begin() as conn:
            row = self._row(conn, name)
            self._may_manage(row, user)
            conn.execute(delete(self.t).where(self.t.c.id == row.id))

    # --- agents -----------------------------------------------------------------------------------
    def issue_agent_token(self, name: str, *, user: User) -> dict[str, Any]:
        """A new token for the device's agent, returned once and stored only as its hash. It
        replaces the device's previous token: one live token per device."""
        self.ensure_seeds()
        if name == HOST:
            raise DeviceError(422, "the host is measured by autonn itself; it needs no agent")
        token = AGENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
        agent_id, now = uuid.uuid4().hex, utcnow()
        with self.db.begin() as conn:
            row = self._row(conn, name)
            self._may_manage(row, user, agent=True)
            conn.execute(update(self.a).where(self.a.c.device_id == row.id).values(revoked=True))
            conn.execute(insert(self.a).values(id=agent_id, device_id=row.id, token_hash=token_hash(token),
                                               created_by=user.id, created_at=now, revoked=False))
        return {"device": name, "agent_id": agent_id, "token": token,
                "note": "shown once; it replaces the device's previous token",
                "command": f"TANGO_AGENT_TOKEN=<token> tango agent --server <project_manager URL> --device {name}"}

    def revoke_agent_token(self, name: str, *, user: User) -> None:
        with self.db.begin() as conn:
            row = self._row(conn, name)
            self._may_manage(row, user, agent=True)
            conn.execute(update(self.a).where(self.a.c.device_id == row.id).values(revoked=True))

    def agent_for_token(self, token: str) -> AgentIdentity | None:
        if not token.startswith(AGENT_TOKEN_PREFIX):
            return None
        with self.db.begin() as conn:
            row = conn.execute(select(self.a.c.id, self.a.c.device_id, self.t.c.name)
                               .join(self.t, self.t.c.id == self.a.c.device_id)
                               .where(self.a.c.token_hash == token_hash(token), self.a.c.revoked.is_(False))).first()
            if row is None:
                return None
            conn.execute(update(self.a).where(self.a.c.id == row.id).values(last_seen_at=utcnow()))
        return AgentIdentity(row.id, row.device_id, row.name)

    def register_agent(self, agent: AgentIdentity, *, device: str, facts: dict[str, Any]) -> None:
        if device != agent.device:
            raise DeviceError(403, f"this token belongs to device {agent.device!r}, not {device!r}; start the agent "
                                   f"with --device {agent.device} or get a token for {device!r}")
        now = utcnow()
        with self.db.begin() as conn:
            conn.execute(update(self.a).where(self.a.c.id == agent.agent_id).values(registered_at=now, facts=facts))
            conn.execute(update(self.t).where(self.t.c.id == agent.device_id).values(facts=facts, updated_at=now))

    def agent_facts(self, device_id: str) -> dict[str, Any] | None:
        with self.db.begin() as conn:
            row = conn.execute(select(self.a.c.facts, self.a.c.registered_at)
                               .where(self.a.c.device_id == device_id, self.a.c.revoked.is_(False))).first()
        return row.facts if row is not None and row.registered_at is not None else None
