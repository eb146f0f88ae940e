"""Builders for settings, runtimes and live stacks used across the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil

from tango.settings import Settings
from tango.spec import SERVICES

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TANGO_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("TANGO_TEST_REDIS", "redis://127.0.0.1:6379")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(home: Path, **extra: str) -> dict[str, str]:
    """TANGO_* variables for an isolated stack: its own home and free ports for every API."""
    env = {"TANGO_HOME": str(home)}
    for name in SERVICES:
        env[f"TANGO_{name.upper()}_URL"] = f"http://127.0.0.1:{free_port()}"
    env.update(extra)
    return env


def make_settings(home: Path, **overrides: object) -> Settings:
    return Settings(home=home, **overrides)


def build_runtime(service: str, settings: Settings):
    module = __import__(f"{service}.runtime", fromlist=["build_runtime"])
    return module.build_runtime(settings)


def subprocess_env(tango_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANGO_")}
    env.update(tango_env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_worker(service: str, tango_env: dict[str, str], log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "celery", "-A", SERVICES[service].celery_module, "worker",
            "-Q", SERVICES[service].queue, "--pool", "threads", "--concurrency", "2",
            "-n", f"{service}-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]
    handle = log.open("ab")
    try:
        return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=subprocess_env(tango_env),
                                cwd=REPO, start_new_session=True)
    finally:
        handle.close()


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def wait_until(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_job(base_url: str, job_id: str, *, timeout: float = 120.0, headers: dict | None = None) -> dict:
    def terminal() -> dict | None:
        job = httpx.get(f"{base_url}/jobs/{job_id}", headers=headers, timeout=5).json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_until(terminal, timeout=timeout, what=f"job {job_id} to end")


# --- autonn ---------------------------------------------------------------------------------------

TINY_RESNET = {"resolutions": [16, 20, 24], "base_widths": [8, 16, 32, 64], "stem_width": 8, "stem_stride": 1}


def digits_version(store, *, dataset_id: str = "digits", version: str = "v1", n: int | None = None,
                   size: int = 24, seed: int = 0):  # noqa: ANN001, ANN201
    """scikit-learn digits frozen as a dataset version in `store` (seeded, stratified by position)."""
    from tango.datasets import split_for, version_from_arrays
    from tango.sampledata import make_digits

    images, labels = make_digits(size=size, seed=seed)
    if n is not None:
        images, labels = images[:n], labels[:n]
    splits = [split_for(i, len(images)) for i in range(len(images))]
    return version_from_arrays(store, dataset_id=dataset_id, version=version, task="classify",
                               classes=[str(d) for d in range(10)], samples=zip(images, labels), splits=splits)


# --- deploy_codegen: tiny models exported the way autonn exports them (ONNX 17 + TorchScript + card) ---

def tiny_classifier(num_classes: int = 3, *, seed: int = 0):
    """A small ResNet-style CNN (conv-BN-ReLU stem, one residual block, pooled linear head)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                      nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):  # noqa: ANN001, ANN201
            return torch.relu(x + self.body(x))

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), Block(16),
                          nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, num_classes))
    for m in model.modules():  # non-trivial BN statistics, so folding them is tested too
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def tiny_detector(num_classes: int = 3, *, seed: int = 0, width: float = 0.125, depth: float = 0.33,
                  spread_scores: bool = True):
    """A small Ultralytics YOLOv8-style detector built from a yaml dict (random weights), with its
    Detect head in export mode: one (1, 4 + nc, anchors) output of decoded xywh boxes + scores.
    spread_scores: recalibrate BN and class biases so that random weights give distinct boxes
    above the confidence threshold (for NMS tests); False keeps Ultralytics' own initialisation."""
    import tempfile

    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="tango-yolo-"))
    import torch
    from ultralytics.nn.modules.head import Detect
    from ultralytics.nn.tasks import DetectionModel

    cfg = {
        "nc": num_classes, "scales": {"t": [depth, width, 1024]}, "scale": "t",
        "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C2f", [128, True]],
                     [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C2f", [256, True]], [-1, 1, "Conv", [512, 3, 2]],
                     [-1, 6, "C2f", [512, True]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C2f", [1024, True]],
                     [-1, 1, "SPPF", [1024, 5]]],
        "head": [[-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 6], 1, "Concat", [1]], [-1, 3, "C2f", [512]],
                 [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 4], 1, "Concat", [1]], [-1, 3, "C2f", [256]],
                 [-1, 1, "Conv", [256, 3, 2]], [[-1, 12], 1, "Concat", [1]], [-1, 3, "C2f", [512]],
                 [-1, 1, "Conv", [512, 3, 2]], [[-1, 9], 1, "Concat", [1]], [-1, 3, "C2f", [1024]],
                 [[15, 18, 21], 1, "Detect", ["nc"]]],
    }
    torch.manual_seed(seed)
    model = DetectionModel(cfg, ch=3, nc=num_classes, verbose=False)
    # Random weights through many BN layers shrink activations to constants; batch statistics of
    # random pictures (one pass, cumulative averaging) keep the features, and so the scores, distinct.
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)] if spread_scores else []
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    if norms:
        with torch.no_grad():
            model.train()(torch.rand(8, 3, 64, 64))
    for bn in norms:
        bn.momentum = 0.03
    model.eval()
    for m in model.modules():
        if isinstance(m, Detect):
            m.export, m.format = True, "onnx"
            # Ultralytics initialises class biases for ~0.01 scores; spread them so that random
            # weights still give boxes above the confidence threshold for NMS to sort out.
            for branch in m.cv3 if spread_scores else []:
                torch.nn.init.normal_(branch[-1].bias, 0.0, 2.0)
    return model


def put_model_bundle(store, model_id: str, model, *, task: str, classes: list[str], input_size: int,
                     arch: str = "tiny") -> dict:
    """Write models/<id>/{model.onnx, model.ts, card.json} as autonn does: ONNX opset 17 from the
    TorchScript-based exporter + onnxslim, TorchScript by tracing, and the card codegen reads."""
    import hashlib
    import io
    import json

    import onnx
    import onnxslim
    import torch

    shape = (1, 3, input_size, input_size)
    output = "logits" if task == "classify" else "output0"
    x = torch.zeros(shape)
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, opset_version=17, dynamo=False, input_names=["images"],
                      output_names=[output], dynamic_axes={"images": {0: "batch"}, output: {0: "batch"}})
    proto = onnxslim.slim(onnx.load_from_string(buf.getvalue()))
    onnx.checker.check_model(proto)
    onnx_bytes = proto.SerializeToString()
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
    ts = io.BytesIO()
    torch.jit.save(traced, ts)
    card = {
        "task": task, "arch": arch, "classes": list(classes),
        "input": {"name": "images", "shape": list(shape), "dtype": "float32", "layout": "NCHW", "color": "RGB",
                  "scale": "1/255", "resize": f"{input_size}x{input_size}"},
        "output": {"name": output}, "params": sum(p.numel() for p in model.parameters()), "flops": None,
        "onnx": {"opset": 17, "sha256": hashlib.sha256(onnx_bytes).hexdigest()}, "metric": None,
        "latency": {}, "device": "host", "dataset": {},
    }
    store.put_bytes(f"models/{model_id}/model.onnx", onnx_bytes)
    store.put_bytes(f"models/{model_id}/model.ts", ts.getvalue())
    store.put_bytes(f"models/{model_id}/card.json", json.dumps(card, indent=2).encode())
    return card

TINY_YOLO = {"resolutions": [64, 96], "backbone_widths": [16, 32, 48, 64], "neck_widths": [48, 32, 48, 64]}


def shapes_version(store, *, dataset_id: str = "shapes", version: str = "v1", n: int = 40, size: int = 96,
                   seed: int = 0):  # noqa: ANN001, ANN201
    """The generated shapes detection set frozen as a dataset version in `store`."""
    from tango.datasets import split_for, version_from_arrays
    from tango.sampledata import SHAPE_CLASSES, make_shapes

    samples = make_shapes(n, size=size, seed=seed)
    return version_from_arrays(store, dataset_id=dataset_id, version=version, task="detect",
                               classes=list(SHAPE_CLASSES), samples=samples,
                               splits=[split_for(i, n) for i in range(n)])


# --- labelling: image files, zips, and ONNX models laid out as autonn exports them -----------------

def image_bytes(array, fmt: str = "PNG") -> bytes:  # noqa: ANN001
    """An HxWx3 uint8 array encoded as an image file."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def zip_bytes(files) -> bytes:  # noqa: ANN001
    """A zip of (name, bytes) pairs (or a dict), deflated, names exactly as given."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in (files.items() if isinstance(files, dict) else files):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data,
                        compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _onnx_model(nodes, inputs, outputs, inits) -> bytes:  # noqa: ANN001
    import onnx
    from onnx import helper

    model = helper.make_model(helper.make_graph(nodes, "tiny", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_colour_classifier(classes=("red", "green", "blue"), *, size: int = 16, gain: float = 12.0):  # noqa: ANN001, ANN201
    """A real (if tiny) classifier: logits = gain * (mean R, G, B) - bias, so a red image is
    confidently 'red' and a grey one is a toss-up. Returns (onnx bytes, card) as autonn exports."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = np.eye(3, dtype=np.float32)[: len(classes)] * gain
    nodes = [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "W", "b"], ["logits"], transB=1)]
    onnx_bytes = _onnx_model(
        nodes, [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(classes)])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(len(classes), np.float32), "b")])
    card = {"task": "classify", "classes": list(classes), "output": {"name": "logits"},
            "input": {"name": "images", "shape": [1, 3, size, size], "dtype": "float32", "layout": "NCHW",
                      "color": "RGB", "scale": "1/255", "resize": f"{size}x{size}"}}
    return onnx_bytes, card


def onnx_grid_detector(classes=("red", "green", "blue"), *, size: int = 32, grid: int = 4, gain: float = 16.0):  # noqa: ANN001, ANN201
    """A real (if tiny) detector in Ultralytics' output0 layout (N, 4 + nc, grid*grid): one box per
    grid cell (the cell itself), class c scored by sigmoid(gain * (mean channel c in the cell - 0.5)).
    Returns (onnx bytes, card)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nc, cell = len(classes), size // grid
    centres = (np.arange(grid) + 0.5) * cell
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    boxes = np.stack([cx.ravel(), cy.ravel(), np.full(grid * grid, cell), np.full(grid * grid, cell)])
    nodes = [helper.make_node("AveragePool", ["images"], ["cells"], kernel_shape=[cell, cell], strides=[cell, cell]),
             helper.make_node("Slice", ["cells", "c0", "cn", "axis1"], ["chosen"]),
             helper.make_node("Reshape", ["chosen", "flat_shape"], ["flat"]),
             helper.make_node("Sub", ["flat", "half"], ["centred"]),
             helper.make_node("Mul", ["centred", "gain"], ["scaled"]),
             helper.make_node("Sigmoid", ["scaled"], ["scores"]),
             helper.make_node("ReduceMean", ["scores"], ["any"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["any", "zero"], ["zeros"]),
             helper.make_node("Add", ["zeros", "boxes"], ["xywh"]),
             helper.make_node("Concat", ["xywh", "scores"], ["output0"], axis=1)]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "c0"),
             numpy_helper.from_array(np.array([nc], np.int64), "cn"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([0, nc, grid * grid], np.int64), "flat_shape"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half"),
             numpy_helper.from_array(np.array(gain, np.float32), "gain"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(boxes[None].astype(np.float32), "boxes")]
    onnx_bytes = _onnx_model(
        nodes, [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + nc, grid * grid])], inits)
    card = {"task": "detect", "classes": list(classes), "output": {"name": "output0"},
            "input": {"name": "images", "shape": [1, 3, size, size], "dtype": "float32", "layout": "NCHW",
                      "color": "RGB", "scale": "1/255", "resize": f"{size}x{size}"}}
    return onnx_bytes, card


def put_onnx_model(store, model_id: str, onnx_bytes: bytes, card: dict) -> None:  # noqa: ANN001
    import json

    store.put_bytes(f"models/{model_id}/model.onnx", onnx_bytes)
    store.put_bytes(f"models/{model_id}/card.json", json.dumps(card, indent=2).encode())


# --- a whole stack ----------------------------------------------------------------------------------

class Stack:
    """`tango up` as a subprocess (its own home and ports), its output collected."""

    def __init__(self, env: dict[str, str]):
        import threading

        self.env = env
        self.urls = {name: env[f"TANGO_{name.upper()}_URL"] for name in SERVICES}
        self.output: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "tango", "up"], cwd=REPO, env=subprocess_env(env),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    def text(self) -> str:
        return "".join(self.output)

    def service_token(self) -> str:
        return (Path(self.env["TANGO_HOME"]) / "service-token").read_text().strip()

    def wait_up(self, timeout: float = 120) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"tango up exited early:\n{self.text()}"
            return "Tango is up" in self.text()

        wait_until(up, timeout=timeout, what="tango up")

    def child_pid(self, fragment: str) -> int:
        """The pid of the stack's process whose command line contains `fragment`."""
        for pid in descendants(self.proc.pid):
            try:
                if fragment in " ".join(psutil.Process(pid).cmdline()):
                    return pid
            except psutil.NoSuchProcess:
                continue
        raise AssertionError(f"no process of the stack runs {fragment!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
