"""Export a fine-tuned sub-network: ONNX (opset 17, simplified), TorchScript and a model card."""

from __future__ import annotations

import hashlib
import io
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAMES = {"classify": "logits", "detect": "output0"}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds counted by torch's own FLOP counter (2 FLOPs per MAC), at batch 1."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(input_shape))
    return int(counter.get_total_flops())


def to_onnx_bytes(model: nn.Module, input_shape: tuple[int, ...], *, task: str, simplify: bool = True) -> bytes:
    import onnx

    model.eval()
    buf = io.BytesIO()
    # The TorchScript-based exporter is the one that honours opset 17 (dynamo keeps 18).
    torch.onnx.export(model, (torch.zeros(input_shape),), buf, opset_version=OPSET, dynamo=False,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAMES[task]],
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAMES[task]: {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def to_torchscript_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    model.eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(input_shape), check_trace=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return buf.getvalue()


def onnx_parity(onnx_bytes: bytes, model: nn.Module, input_shape: tuple[int, ...], *,
                seed: int = 0) -> dict[str, float]:
    """Max abs difference between ONNX Runtime and PyTorch on one random input, and the same
    relative to the output's largest magnitude (detector boxes are in pixels, so the absolute
    figure grows with the input size)."""
    import onnxruntime as ort

    x = np.random.default_rng(seed).random(input_shape, dtype=np.float32)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = sess.run(None, {INPUT_NAME: x})[0]
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x))
    want = (want[0] if isinstance(want, (tuple, list)) else want).numpy()
    diff = float(np.abs(got - want).max())
    return {"max_abs_diff_vs_torch": diff, "max_rel_diff_vs_torch": diff / max(1.0, float(np.abs(want).max()))}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def export_bundle(*, model: nn.Module, task: str, input_size: int, card: dict[str, Any]) -> dict[str, bytes]:
    """model.onnx, model.ts and card.json, with the card completed by what export measures."""
    import json

    shape = (1, 3, input_size, input_size)
    onnx_bytes = to_onnx_bytes(model, shape, task=task)
    ts_bytes = to_torchscript_bytes(model, shape)
    card = {
        **card,
        "task": task,
        "input": {"name": INPUT_NAME, "shape": list(shape), "dtype": "float32", "layout": "NCHW",
                  "color": "RGB", "scale": "1/255", "resize": f"{input_size}x{input_size}"},
        "output": {"name": OUTPUT_NAMES[task]},
        "params": count_params(model),
        "flops": count_flops(model, shape),
        "onnx": {"opset": OPSET, "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
                 **onnx_parity(onnx_bytes, model, shape)},
        "torchscript": {"sha256": hashlib.sha256(ts_bytes).hexdigest()},
        "toolchain": {"torch": torch.__version__, "python": platform.python_version()},
        "commit": git_commit(),
    }
    return {"model.onnx": onnx_bytes, "model.ts": ts_bytes,
            "card.json": json.dumps(card, indent=2, sort_keys=True).encode()}
