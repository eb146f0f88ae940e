"""TVM runtime of this package: an ahead-of-time compiled Relax VM library and its parameters.

Only TVM's runtime is needed: a runtime-only TVM ships in vendor/ (no compiler, no LLVM), and
the compiled kernels are in model-<device>.so.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import numpy as np


def _import_tvm(root: Path):
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    vendor = str(root / "vendor")
    if vendor not in sys.path:
        sys.path.insert(0, vendor)
    import tvm
    from tvm.runtime import vm

    return tvm, vm


def _check_cpu(artifacts: dict) -> None:
    """Refuse, in words, a library compiled for a CPU with extensions this one lacks: loading it
    would end in an illegal-instruction crash at the first kernel."""
    need = artifacts.get("cpu_flags")
    cpuinfo = Path("/proc/cpuinfo")
    if not need or not cpuinfo.exists():
        return
    line = next((ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("flags")), None)
    if line is None:
        return
    missing = sorted(set(need) - set(line.split(":", 1)[1].split()))
    if missing:
        raise RuntimeError(f"model-cpu.so was compiled for CPU {artifacts.get('cpu')!r} and uses "
                           f"{', '.join(missing)}, which this CPU lacks; generate the tvm package again "
                           "with the option cpu: generic (any x86-64) or this device's CPU")


class Backend:
    def __init__(self, root: Path, manifest: dict, device: str, threads: int | None = None):
        self.device = device
        if threads:
            os.environ["TVM_NUM_THREADS"] = str(threads)  # read when TVM's thread pool starts
        tvm, vm = _import_tvm(root)
        artifacts = manifest["artifacts"]
        if device == "cuda":
            # The CUDA runtime module is a separate library that must be global before the .so loads.
            ctypes.CDLL(str(root / "vendor" / "tvm" / "lib" / "libtvm_runtime_cuda.so"), mode=ctypes.RTLD_GLOBAL)
            self.dev = tvm.cuda(0)
        else:
            _check_cpu(artifacts)
            self.dev = tvm.cpu(0)
        lib = tvm.runtime.load_module(str(root / artifacts["library"][device]))
        self.vm = vm.VirtualMachine(lib, self.dev)
        self.fn = self.vm["main"]
        with np.load(root / artifacts["params"]) as saved:
            self.params = [tvm.runtime.tensor(saved[f"p{i}"], device=self.dev) for i in range(len(saved.files))]
        self.tvm = tvm
        self.batch = int(manifest["input"]["shape"][0])
        self.info = {"runtime": "tvm", "version": tvm.__version__, "runtime_only": bool(tvm.base._RUNTIME_ONLY),
                     "tuned": bool(manifest.get("tuning")), "compiled_for_cpu": artifacts.get("cpu")}

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        out = self.fn(self.tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32), device=self.dev),
                      *self.params)
        outs = list(out) if not hasattr(out, "numpy") else [out]
        return [o.numpy() for o in outs]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        # Compiled for a fixed batch: run a larger batch one slice at a time.
        if x.shape[0] == self.batch:
            return self._run(x)
        parts = [self._run(x[i : i + self.batch]) for i in range(0, x.shape[0], self.batch)]
        return [np.concatenate(group) for group in zip(*parts)]
