"""TensorRT runtime of this package: runs model.engine, built on the device by build_engine.py.

TensorRT 11 named-tensor API (num_io_tensors / set_tensor_address / execute_async_v3) with
CUDA memory from cuda-python. Generated and statically checked by Tango, not run: no TensorRT
could be installed where it was generated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorrt as trt
from cuda.bindings import runtime as cudart


def _check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA call failed: {err}")
    return rest[0] if len(rest) == 1 else rest


class Backend:
    def __init__(self, root: Path, manifest: dict, device: str, threads: int | None = None):
        self.device = device
        engine_path = root / manifest["artifacts"]["engine"]
        if not engine_path.exists():
            raise SystemExit(f"{engine_path.name} is not built yet: run `python build_engine.py` on this GPU first")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise SystemExit(f"TensorRT could not load {engine_path.name}; rebuild it on this GPU and TensorRT version")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = _check(cudart.cudaStreamCreate())
        self.info = {"runtime": "tensorrt", "version": trt.__version__, "precision": manifest["precision"]}

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        name = self.inputs[0]
        host_in = np.ascontiguousarray(x, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
        self.context.set_input_shape(name, host_in.shape)
        buffers, hosts = [], []
        try:
            d_in = _check(cudart.cudaMalloc(host_in.nbytes))
            buffers.append(d_in)
            _check(cudart.cudaMemcpyAsync(d_in, host_in.ctypes.data, host_in.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
            self.context.set_tensor_address(name, int(d_in))
            for out in self.outputs:
                shape = tuple(self.context.get_tensor_shape(out))
                host = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(out)))
                d_out = _check(cudart.cudaMalloc(max(host.nbytes, 1)))
                buffers.append(d_out)
                hosts.append((host, d_out))
                self.context.set_tensor_address(out, int(d_out))
            if not self.context.execute_async_v3(int(self.stream)):
                raise RuntimeError("TensorRT execution failed")
            for host, d_out in hosts:
                _check(cudart.cudaMemcpyAsync(host.ctypes.data, d_out, host.nbytes,
                                              cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
            _check(cudart.cudaStreamSynchronize(self.stream))
        finally:
            for ptr in buffers:
                cudart.cudaFree(ptr)
        return [h.astype(np.float32) for h, _ in hosts]
