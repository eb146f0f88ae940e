"""The one declarative table of targets x options, and the validation every request goes through.

A target's row says what it can do; a request asks for options per target. Anything the row does
not offer is refused with the closest thing that would work, so a person can fix the request
without reading the code.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Verification = Literal["run", "static"]
CPU_NAME = r"^[a-z0-9][a-z0-9_.-]{0,39}$"  # an LLVM -mcpu name (checked against LLVM's list at request time)


@dataclass(frozen=True)
class TargetSpec:
    name: str
    summary: str
    precisions: tuple[str, ...]
    devices: tuple[str, ...]
    dynamic_batch: bool
    tune: bool
    # How a package of this target is proven here: run in a fresh venv, or checked statically.
    verification: Verification
    # (option, value) -> the device it needs, e.g. fp16 PyTorch only makes sense on CUDA.
    needs_device: dict[tuple[str, str], str] = field(default_factory=dict)


TARGET_TABLE: dict[str, TargetSpec] = {
    spec.name: spec
    for spec in (
        TargetSpec("pytorch", "TorchScript program, CPU and CUDA", precisions=("fp32", "fp16"),
                   devices=("cpu", "cuda"), dynamic_batch=True, tune=False, verification="run",
                   needs_device={("precision", "fp16"): "cuda"}),
        TargetSpec("onnxruntime", "ONNX Runtime; CPU EP, CUDA/TensorRT EP when present",
                   precisions=("fp32",), devices=("cpu", "cuda", "tensorrt"), dynamic_batch=True,
                   tune=False, verification="run"),
        TargetSpec("tvm", "Apache TVM Relax, compiled ahead of time, shipped runtime-only",
                   precisions=("fp32",), devices=("cpu", "cuda"), dynamic_batch=False, tune=True,
                   verification="run"),
        TargetSpec("tensorrt", "TensorRT 11 engine-build script (strongly typed) and runner",
                   precisions=("fp32", "fp16", "int8"), devices=("cuda",), dynamic_batch=True,
                   tune=False, verification="static"),
    )
}


class TargetOptions(BaseModel):
    """What a request may ask of one target; the table decides what each target accepts."""

    model_config = ConfigDict(extra="forbid")

    precision: str = "fp32"
    # Devices the package carries artifacts for; the first one is infer.py's default.
    # None: the target's first device that this machine has (cpu where offered).
    devices: list[str] | None = None
    dynamic_batch: bool = False
    max_batch: int = Field(8, ge=1, le=1024)
    # tvm: apply the model's latest stored MetaSchedule database (made by a `tune` job).
    tune: bool = False
    # tvm llvm: threads the compiled kernels use; None: this machine's cores.
    num_cores: int | None = Field(None, ge=1, le=512)
    # tvm llvm: the CPU the kernels are compiled for (LLVM's -mcpu: "znver4", "skylake-avx512",
    # "x86-64-v3", "generic"); None: this machine's. Without it LLVM emits baseline x86-64 (SSE2)
    # and leaves AVX2/AVX-512 unused; a library built for a newer CPU stops on an older one, so
    # the package checks the CPU's flags before loading it.
    cpu: str | None = Field(None, pattern=CPU_NAME)
    # tvm cuda / tensorrt: the GPU architecture to compile for (the H100 is sm_90).
    cuda_arch: str = Field("sm_90", pattern=r"^sm_[0-9]{2,3}[a-z]?$")


class OptionError(ValueError):
    """A request the table refuses; the message says what would work instead."""


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_target_name(name: str) -> TargetSpec:
    if name not in TARGET_TABLE:
        raise OptionError(f"unknown target {name!r}{did_you_mean(name, list(TARGET_TABLE))}; "
                          f"targets: {', '.join(TARGET_TABLE)}")
    return TARGET_TABLE[name]


def _offering(option: str, value: str) -> list[str]:
    return [t.name for t in TARGET_TABLE.values() if value in getattr(t, option)]


def resolve(target: str, options: TargetOptions | None = None) -> TargetOptions:
    """Check one target's options against its row and fill the defaults in; raise OptionError."""
    spec = check_target_name(target)
    opts = (options or TargetOptions()).model_copy(deep=True)
    if opts.precision not in spec.precisions:
        others = [t for t in _offering("precisions", opts.precision) if t != target]
        hint = f"; {opts.precision} is offered by: {', '.join(others)}" if others else ""
        raise OptionError(f"target {target!r} has no precision {opts.precision!r} (it offers: "
                          f"{', '.join(spec.precisions)}){hint}; use precision "
                          f"{spec.precisions[0]!r} or another target")
    if opts.devices is None:
        opts.devices = ["cpu"] if "cpu" in spec.devices else [spec.devices[0]]
    if not opts.devices:
        raise OptionError(f"target {target!r} needs at least one device (it offers: {', '.join(spec.devices)})")
    for device in opts.devices:
        if device not in spec.devices:
            raise OptionError(f"target {target!r} has no device {device!r}"
                              f"{did_you_mean(device, list(spec.devices))}; it offers: {', '.join(spec.devices)}")
    if len(set(opts.devices)) != len(opts.devices):
        raise OptionError(f"target {target!r}: devices {opts.devices} name one device twice")
    if opts.dynamic_batch and not spec.dynamic_batch:
        others = [t.name for t in TARGET_TABLE.values() if t.dynamic_batch]
        raise OptionError(f"target {target!r} is compiled for a fixed batch of 1 and has no dynamic_batch; "
                          f"drop dynamic_batch or use one of: {', '.join(others)}")
    if opts.tune and not spec.tune:
        raise OptionError(f"target {target!r} has no tuning step; drop tune "
                          f"(tuning is offered by: {', '.join(_offering_flag('tune'))})")
    for (option, value), device in spec.needs_device.items():
        if getattr(opts, option) == value and device not in opts.devices:
            raise OptionError(f"target {target!r}: {option} {value!r} needs device {device!r}; "
                              f"add it, e.g. devices: [{device!r}]")
    return opts


def _offering_flag(flag: str) -> list[str]:
    return [t.name for t in TARGET_TABLE.values() if getattr(t, flag)]


def resolve_all(targets: list[str], options: dict[str, TargetOptions]) -> dict[str, TargetOptions]:
    for name in options:
        if name not in targets:
            check_target_name(name)
            raise OptionError(f"options were given for target {name!r}, which is not in targets "
                              f"{targets}; add it to targets or drop its options")
    if len(set(targets)) != len(targets):
        raise OptionError(f"targets {targets} name a target twice")
    return {t: resolve(t, options.get(t)) for t in targets}


def package_name(target: str, opts: TargetOptions) -> str:
    """The runtime name of a package, like a device profile's (`tvm-tuned`, `tensorrt-fp16`)."""
    parts = [target]
    if opts.precision != "fp32":
        parts.append(opts.precision)
    if opts.tune:
        parts.append("tuned")
    if opts.devices and opts.devices[0] != "cpu" and "cpu" in TARGET_TABLE[target].devices:
        parts.append(opts.devices[0])
    return "-".join(parts)


def table_public() -> list[dict]:
    return [{"target": s.name, "summary": s.summary, "precisions": list(s.precisions),
             "devices": list(s.devices), "dynamic_batch": s.dynamic_batch, "tune": s.tune,
             "verification": s.verification,
             "constraints": [f"{opt}={val} needs device {dev}" for (opt, val), dev in s.needs_device.items()]}
            for s in TARGET_TABLE.values()]
