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


# LLVM's names of the x86 extensions that matter to compiled kernels -> /proc/cpuinfo's names.
CPU_FLAGS = {"sse4.2": "sse4_2", "popcnt": "popcnt", "bmi": "bmi1", "bmi2": "bmi2", "movbe": "movbe", "avx": "avx",
             "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512f": "avx512f", "avx512bw": "avx512bw",
             "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512cd": "avx512cd", "avx512vnni": "avx512_vnni",
             "avx512bf16": "avx512_bf16"}
PORTABLE_CPUS = ("generic", "x86-64")


def _llvm(name: str):  # noqa: ANN202
    import tvm  # registers the compiler's global functions with the FFI

    return tvm.get_global_func(name)


def host_cpu() -> str:
    """This machine's CPU as LLVM names it (e.g. znver4, sapphirerapids)."""
    return str(_llvm("target.llvm_get_system_cpu")())


def resolve_cpu(cpu: str | None) -> str:
    """The -mcpu to compile for: the one asked, checked against LLVM's list, else this machine's."""
    if cpu is None:
        return host_cpu()
    if not bool(_llvm("target.llvm_is_valid_cpu")(cpu, str(_llvm("target.llvm_get_system_triple")()))):
        from deploy_codegen.options import OptionError, did_you_mean

        known = [str(c) for c in _llvm("target.llvm_get_cpu_archlist")(llvm_target(1, "generic"))]
        raise OptionError(f"tvm: LLVM knows no CPU {cpu!r}{did_you_mean(cpu, known)}; use one of "
                          f"{', '.join(PORTABLE_CPUS)} (any x86-64), this machine's {host_cpu()!r}, or a name "
                          f"LLVM knows (e.g. x86-64-v3, skylake-avx512, znver4)")
    return cpu


def required_cpu_flags(cpu: str) -> list[str] | None:
    """The /proc/cpuinfo flags a library built for `cpu` relies on: known for this machine's CPU
    (LLVM reports its features), the portable x86-64 levels and the baseline (none); None for
    other names."""
    from tango.agent import X86_LEVELS

    if cpu in PORTABLE_CPUS:
        return []
    levels = dict(X86_LEVELS)
    if cpu in levels:
        return sorted(levels[cpu])
    if cpu != host_cpu():
        return None
    features = _llvm("tvm.codegen.llvm.GetHostCPUFeatures")()
    return sorted(flag for name, flag in CPU_FLAGS.items() if bool(features.get(name, False)))


def llvm_target(num_cores: int | None, cpu: str | None = None):
    import tvm

    # The dict form: string targets with -mcpu= etc. are rejected by TVM 0.27.
    return tvm.target.Target({"kind": "llvm", "num-cores": int(num_cores or os.cpu_count() or 1),
                              "mcpu": cpu or host_cpu()})


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
        cpu = resolve_cpu(opts.cpu)
        flags = required_cpu_flags(cpu)
        if "cpu" in opts.devices:
            needs = ("any x86-64" if flags == [] else f"a CPU with {', '.join(flags)}" if flags
                     else "that CPU (its flags are not checked at load)")
            notes.append(f"cpu: kernels compiled for {cpu}, so they run on {needs}; for another CPU generate "
                         "again with the tvm option cpu (generic: any x86-64)")
        for device in opts.devices:
            target = llvm_target(opts.num_cores, cpu) if device == "cpu" else cuda_target(opts.cuda_arch)
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
                       "cpu": cpu, "cpu_flags": flags,
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
