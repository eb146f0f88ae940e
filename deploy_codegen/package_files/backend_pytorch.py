"""PyTorch runtime of this package: the TorchScript program model.ts, on CPU or CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class Backend:
    def __init__(self, root: Path, manifest: dict, device: str, threads: int | None = None):
        self.device = device
        if threads:
            torch.set_num_threads(threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("device 'cuda' was asked for, but torch sees no CUDA device here")
        self.half = manifest["precision"] == "fp16"
        self.torch_device = torch.device(device)
        self.model = torch.jit.load(str(root / manifest["artifacts"]["program"]), map_location=self.torch_device)
        self.model.eval()
        if self.half:
            self.model.half()
        self.num_outputs = len(manifest["outputs"])
        self.info = {"runtime": "torch", "version": torch.__version__, "precision": manifest["precision"]}

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.torch_device)
        out = self.model(t.half() if self.half else t)
        outs = list(out)[: self.num_outputs] if isinstance(out, (tuple, list)) else [out]
        return [o.float().cpu().numpy() for o in outs]
