"""ONNX Runtime of this package: model.onnx on the CPU EP, or the CUDA / TensorRT EP when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class Backend:
    def __init__(self, root: Path, manifest: dict, device: str, threads: int | None = None):
        self.device = device
        wanted = PROVIDERS[device]
        available = set(ort.get_available_providers())
        if wanted[0] not in available:
            raise SystemExit(f"device {device!r} needs {wanted[0]}, but this onnxruntime has only "
                             f"{sorted(available)} (install onnxruntime-gpu for CUDA / TensorRT)")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(root / manifest["artifacts"]["model"]), options,
                                            providers=[p for p in wanted if p in available])
        self.input_name = self.session.get_inputs()[0].name
        self.info = {"runtime": "onnxruntime", "version": ort.__version__,
                     "providers": self.session.get_providers()}

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
