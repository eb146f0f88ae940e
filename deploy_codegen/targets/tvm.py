"""TVM target: Relax compiled ahead of time for llvm (and cross-compiled for CUDA), shipped with a
runtime-only TVM (no compiler, no LLVM) so the device needs neither.

Tuning is a separate `tune` job (MetaSchedule; slow); its database is stored and applied here
when a request asks for `tune: true`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from deploy_codegen.pins import installed_version, requirement_lines
from deploy_codegen.source import SourceModel
from deploy_codegen.targets import BuildInput, BuildOutput, Target, check, register_target
from deploy_codegen.tune import DATABASE_FILES

# Left out of the shipped runtime: the compiler library (250 MB, LLVM inside) and build inputs.
VENDOR_EXCLUDE = ("libtvm_compiler.so", "3rdparty", "include", "src", "__pycache__", "web")


def llvm_target(num_cores: int | None):
    import tvm

    # The dict form: string targets with -mcpu= etc. are rejected by TVM 0.27.
    return tvm.target.Target({"kind": "llvm", "num-cores": int(num_cores or os.cpu_count() or 1)})


def cuda_target(arch: str):
    import tvm

    return tvm.target.Target({"kind": "cuda", "arch": arch}, host={"kind": "llvm"})


def import_onnx(source: SourceModel):
    """The ONNX graph as a Relax module with the weights as inputs, and those weights."""
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    proto = onnx.load_from_string(source.onnx)
    mod = from_onnx(proto, shape_dict={source.input_name: source.input_shape}, keep_params_in_input=True)
    mod, params = relax.frontend.detach_params(mod)
    return mod, list(params.get("main", []))


def prepare_for_tuning(mod, target):
    """Lower to fused TIR the same way for tuning and for applying a database, so they match."""
    import tvm
    from tvm.relax import pipeline, transform

    with target:
        return tvm.transform.Sequential([transform.DecomposeOpsForInference(), transform.CanonicalizeBindings(),
                                         pipeline.zero_pipeline()])(mod)


def compile_module(mod, target, *, database_dir: str | None = None):
    import tvm
    from tvm import relax

    if database_dir is not None:
        mod = prepare_for_tuning(mod, target)
        with target, tvm.transform.PassContext(opt_level=3):
            mod = relax.transform.MetaScheduleApplyDatabase(database_dir)(mod)
    return tvm.compile(mod, target=target)


def vendor_runtime(dest: Path) -> dict[str, Any]:
    """Copy TVM's Python package without its compiler: what the device runs."""
    import tvm

    src = Path(tvm.__file__).resolve().parent
    shutil.copytree(src, dest / "tvm", ignore=shutil.ignore_patterns(*VENDOR_EXCLUDE))
    size = sum(p.stat().st_size for p in (dest / "tvm").rglob("*") if p.is_file())
    return {"path": "vendor/tvm", "bytes": size, "from": f"apache-tvm=={installed_version('apache-tvm')}"}


@register_target("tvm")
class TvmTarget(Target):
    backend_file = "backend_tvm.py"

    def build(self, inp: BuildInput) -> BuildOutput:
        import tvm

        opts, pkg = inp.options, inp.pkg
        inp.progress("tvm: importing the ONNX graph into Relax")
        mod, params = import_onnx(inp.source)
        np.savez(pkg / "params.npz", **{f"p{i}": p.numpy() for i, p in enumerate(params)})
        libraries, targets, notes = {}, {}, []
        db_dir = None
        if inp.tuning is not None:
            db_dir = str(pkg / "tuning")
            os.makedirs(db_dir)
            for name in DATABASE_FILES:
                (pkg / "tuning" / name).write_bytes(inp.store.get_bytes(f"{inp.tuning['prefix']}/{name}"))
            notes.append(f"kernels scheduled from the MetaSchedule database of tune job {inp.tuning['job_id']} "
                         f"({inp.tuning['trials']} trials); the database ships in tuning/")
        for device in opts.devices:
            target = llvm_target(opts.num_cores) if device == "cpu" else cuda_target(opts.cuda_arch)
            inp.progress(f"tvm: compiling for {device} ({target.kind.name})")
            ex = compile_module(mod, target, database_dir=db_dir if device == "cpu" else None)
            name = f"model-{device}.so"
            ex.export_library(str(pkg / name))
            libraries[device], targets[device] = name, str(target)
        if "cuda" in opts.devices:
            notes.append(f"cuda: cross-compiled here for {opts.cuda_arch} (nvcc); generated, not run here "
                         "(no GPU); the runtime loads libtvm_runtime_cuda.so before the library")
        vendor = vendor_runtime(pkg / "vendor")
        return BuildOutput(
            artifacts={"library": libraries, "params": "params.npz", "compiled_for": targets,
                       "runtime": vendor, "num_params": len(params)},
            toolchain={"apache-tvm": installed_version("apache-tvm"),
                       "apache-tvm-ffi": installed_version("apache-tvm-ffi"), "tvm_build": tvm.__version__},
            # The vendored runtime needs only the FFI and numpy; the compiler stays here.
            requirements=requirement_lines(["apache-tvm-ffi", "numpy", "pillow"]),
            notes=notes,
            manifest={"tuning": inp.tuning} if inp.tuning else {},
        )

    def static_checks(self, pkg: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        results = super().static_checks(pkg, manifest)
        lib = pkg / "vendor" / "tvm" / "lib"
        results.append(check("shipped TVM is runtime-only (no libtvm_compiler.so)",
                             (lib / "libtvm_runtime.so").exists() and not (lib / "libtvm_compiler.so").exists()))
        for device, name in manifest["artifacts"]["library"].items():
            head = (pkg / name).read_bytes()[:4] if (pkg / name).exists() else b""
            results.append(check(f"compiled library for {device} is a shared object: {name}", head == b"\x7fELF"))
        return results
