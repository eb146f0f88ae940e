"""What the job kinds share: strict params, the compute device, checkpoints in the store, progress
shares, and supernets in the store."""

from __future__ import annotations

import io
from typing import Any

import torch
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict

from autonn.spaces import get_search_space
from autonn.spaces.base import SearchSpace, Supernet
from tango.queue import JobContext


DEFAULT_SPACE = {"classify": "resnet_cls", "detect": "yolo_det"}
HOST_DEVICE = "host"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is visible to this worker")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class JobCheckpointer:
    """The training code's Checkpointer, on the job's write-once checkpoints in the store."""

    def __init__(self, ctx: JobContext, name: str):
        self.ctx, self.name = ctx, name

    def save(self, epoch: int, payload: bytes) -> None:
        self.ctx.store.put_if_absent(self.ctx.checkpoint_key(epoch, self.name), payload)

    def load_latest(self) -> tuple[int, bytes] | None:
        return self.ctx.latest_checkpoint(self.name)


def stage_progress(ctx: JobContext, start: float, end: float):  # noqa: ANN201
    """Map a stage's own 0..1 progress into its share of the job's progress."""
    def report(fraction: float, message: str, metrics: dict | None = None) -> None:
        detail = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (metrics or {}).items())
        ctx.progress(start + (end - start) * min(max(fraction, 0.0), 1.0), f"{message} {detail}".strip())
    return report


class ForwardOnly:
    """`ctx` whose progress never runs backwards: a budget search repeats its stages (shortlist,
    checks, fine-tunes, measurement) each round, and a bar that jumps back reads as a restart."""

    def __init__(self, ctx: JobContext):
        self._ctx, self._at = ctx, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def progress(self, fraction: float, message: str = "") -> None:
        self._at = max(self._at, fraction)
        self._ctx.progress(self._at, message)


# --- supernets in the store ------------------------------------------------------------------------

def supernet_keys(supernet_id: str) -> dict[str, str]:
    base = f"supernets/{supernet_id}"
    return {"weights": f"{base}/weights.pt", "predictor": f"{base}/predictor.bin", "pairs": f"{base}/pairs.json",
            "meta": f"{base}/meta.json"}


def save_supernet_weights(ctx: JobContext, *, supernet: Supernet, space: SearchSpace, num_classes: int) -> str:
    buf = io.BytesIO()
    torch.save({"space": space.name, "options": getattr(space, "options", {}), "num_classes": num_classes,
                "state_dict": {k: v.cpu() for k, v in supernet.state_dict().items()}}, buf)
    return ctx.store.put_if_absent(supernet_keys(ctx.job_id)["weights"], buf.getvalue())


def load_supernet(store, row: dict[str, Any]) -> tuple[SearchSpace, Supernet]:  # noqa: ANN001
    blob = torch.load(io.BytesIO(store.get_bytes(supernet_keys(row["id"])["weights"])), weights_only=False)
    space = get_search_space(blob["space"], **blob["options"])
    supernet = space.build_supernet(num_classes=blob["num_classes"])
    supernet.load_state_dict(blob["state_dict"])
    return space, supernet.eval()


# --- train_supernet ------------------------------------------------------------------------------


def ready_supernet(runtime, supernet_id: str) -> dict[str, Any]:  # noqa: ANN001
    row = runtime.records.get("supernets", supernet_id)
    if row is None:
        raise HTTPException(422, detail=f"no supernet {supernet_id!r}; train one with a train_supernet job")
    if row["state"] != "ready":
        raise HTTPException(422, detail=f"supernet {supernet_id} is still {row['state']}; wait for its job to finish")
    return row


def measurer(space: SearchSpace, build, threads: int):  # noqa: ANN001, ANN202
    """arch -> measured ms on the host, timing the module `build(arch)` returns. An arch measured
    again (a near-budget repeat, another reading) is timed on the session of its first export."""
    from autonn.latency import measure_network_ms, network_input_shape, session_measure

    reuse = session_measure()

    def measure(arch: dict) -> float:
        name = space.arch_key(arch)  # one name per arch: the session cache's key
        timed = measure_network_ms(models={name: (build(arch), network_input_shape(space, arch))}, threads=threads,
                                   measure=reuse)
        return float(timed[name]["median_ms"])
    return measure
