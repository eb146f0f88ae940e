"""TensorRT target: an engine-build script for the TensorRT 11 Python API (strongly typed: the
precision is in the ONNX graph, fp16 as float16 types, int8 as explicit Q/DQ made from shipped
calibration data), a runner for the built engine, and the static checks possible without TensorRT.

TensorRT cannot be installed where this runs, so a package is "generated and statically checked,
not run" — the manifest and report say exactly that, never more.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from deploy_codegen.pins import requirement_lines
from deploy_codegen.targets import BuildInput, BuildOutput, Target, attribute_uses, check, register_target

STATUS = "generated and statically checked, not run"
TENSORRT_PIN = {"tensorrt-cu13": "11.4.0.106"}
ENGINE_ONNX = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8_qdq.onnx"}

# ONNX operators the TensorRT ONNX parser imports (onnx-tensorrt's operator support list, the
# subset a vision model meets). Anything else would fail at engine build on the device.
TRT_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Einsum Elu Equal Erf Exp Expand Flatten Floor Gather GatherElements GatherND Gelu
Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization
HardSigmoid HardSwish Identity If InstanceNormalization IsInf IsNaN LRN LayerNormalization LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean Min Mish Mod Mul
Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pad ParametricSoftplus Pow QuantizeLinear
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
Reshape Resize ReverseSequence RoiAlign Round ScaledTanh Scatter ScatterElements ScatterND Selu Shape
Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub
Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Weak-typing and implicit-quantization APIs that TensorRT 11 removed: a script using them fails there.
REMOVED_TRT_APIS = frozenset({
    "BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.BF16", "BuilderFlag.FP8", "BuilderFlag.INT4",
    "BuilderFlag.FP4", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "BuilderFlag.PREFER_PRECISION_CONSTRAINTS",
    "IInt8Calibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator",
    "IInt8LegacyCalibrator", "Builder.platform_has_fast_fp16", "Builder.platform_has_fast_int8",
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
})
REMOVED_TRT_ATTRS = frozenset({"int8_calibrator", "set_quantization_flag", "platform_has_fast_fp16",
                               "platform_has_fast_int8", "device_memory_size", "execute_v2",
                               "execute_async_v2", "get_binding_shape", "num_bindings"})
TRTEXEC_REMOVED = re.compile(r"trtexec[^\n]*--(fp16|int8|calib|bf16|best)\b")


def to_fp16(src: Path, dst: Path) -> None:
    """float16 weights and activations, float32 inputs/outputs: what a strongly typed fp16 build reads."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    # The converter appends its input casts after the nodes that read them; ONNX wants topological order.
    topological_sort(model.graph)
    onnx.save(model, str(dst))


def topological_sort(graph) -> None:  # noqa: ANN001
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("the graph has a cycle or reads a tensor nothing produces")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def to_int8_qdq(src: Path, dst: Path, calibration: np.ndarray, input_name: str) -> None:
    """Explicit quantization: symmetric int8 Q/DQ pairs (TensorRT wants zero points of 0)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration[i : i + 1] for i in range(len(calibration)))

        def get_next(self):  # noqa: ANN202
            batch = next(self.items, None)
            return None if batch is None else {input_name: batch}

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def polygraphy_lint(path: Path) -> dict[str, Any]:
    exe = shutil.which("polygraphy") or str(Path(sys.executable).parent / "polygraphy")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lint.json"
        proc = subprocess.run([exe, "check", "lint", str(path), "-o", str(out)], capture_output=True,
                              text=True, timeout=300)
        report = json.loads(out.read_text()) if out.exists() else {}
    failing = report.get("summary", {}).get("failing", [])
    return {"ok": proc.returncode == 0 and not failing, "failing": failing,
            "entries": len(report.get("lint_entries", [])),
            "log": (proc.stdout + proc.stderr)[-800:] if proc.returncode else ""}


@register_target("tensorrt")
class TensorRtTarget(Target):
    backend_file = "backend_tensorrt.py"

    def build(self, inp: BuildInput) -> BuildOutput:
        from importlib.metadata import version

        opts, pkg = inp.options, inp.pkg
        shutil.copy(Path(__file__).resolve().parent.parent / "package_files" / "build_engine.py", pkg)
        engine_onnx = ENGINE_ONNX[opts.precision]
        notes = [f"TensorRT: {STATUS}. Build the engine on the target GPU: python build_engine.py"]
        extra: dict[str, Any] = {}
        if opts.precision == "fp16":
            inp.progress("tensorrt: converting the graph to float16 types")
            to_fp16(pkg / "model.onnx", pkg / engine_onnx)
        elif opts.precision == "int8":
            inp.progress("tensorrt: inserting int8 Q/DQ from calibration data")
            calib = np.asarray(inp.calibration, dtype=np.float32)
            (pkg / "calibration").mkdir()
            np.save(pkg / "calibration" / "images.npy", calib)
            to_int8_qdq(pkg / "model.onnx", pkg / engine_onnx, calib, inp.source.input_name)
            extra["calibration"] = {"file": "calibration/images.npy", "samples": int(len(calib)),
                                    "method": "onnxruntime quantize_static, QDQ, symmetric int8, per-channel"}
        return BuildOutput(
            artifacts={"engine_onnx": engine_onnx, "engine": "model.engine", "build_script": "build_engine.py",
                       **extra},
            toolchain={"tensorrt": f"{TENSORRT_PIN['tensorrt-cu13']} (pinned, not installed here)",
                       "polygraphy": version("polygraphy"), "onnx": version("onnx")},
            requirements=requirement_lines(["numpy", "pillow", "cuda-bindings"], explicit=TENSORRT_PIN),
            notes=notes,
            manifest={"status": STATUS},
        )

    def static_checks(self, pkg: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        import onnx

        results = super().static_checks(pkg, manifest)
        engine_onnx = pkg / manifest["artifacts"]["engine_onnx"]
        lint = polygraphy_lint(engine_onnx)
        results.append(check(f"polygraphy check lint: {engine_onnx.name}", lint["ok"],
                             f"failing nodes {lint['failing']}; {lint['entries']} lint entries {lint['log']}".strip()))
        ops = {n.op_type for n in onnx.load(str(engine_onnx)).graph.node}
        unknown = sorted(ops - TRT_OPS)
        results.append(check(f"operator allow-list: {engine_onnx.name}", not unknown,
                             f"{len(ops)} operator types; not importable by TensorRT: {unknown}" if unknown
                             else f"{len(ops)} operator types, all importable: {sorted(ops)}"))
        for script in ("build_engine.py", "backend.py"):
            used = attribute_uses(pkg / script, "trt")
            removed = sorted(u for u in used if u in REMOVED_TRT_APIS or set(u.split(".")) & REMOVED_TRT_ATTRS)
            results.append(check(f"no TensorRT 11-removed API in {script}", not removed,
                                 f"uses {removed}" if removed else f"{len(used)} trt attributes used"))
        from cuda.bindings import runtime as cudart

        missing = sorted(a for a in attribute_uses(pkg / "backend.py", "cudart")
                         if not _has_chain(cudart, a))
        results.append(check("backend.py's CUDA runtime calls exist in cuda-bindings", not missing,
                             f"missing {missing}" if missing else ""))
        offending = [p.name for p in pkg.rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".txt", "")
                     and TRTEXEC_REMOVED.search(p.read_text(errors="ignore"))]
        results.append(check("no trtexec --fp16/--int8/--calib (removed in TensorRT 11)", not offending,
                             f"in {offending}" if offending else ""))
        return results

    def dockerfile(self, manifest: dict[str, Any]) -> str:
        return f"""# TensorRT package ({STATUS}). Run with an NVIDIA GPU:
#   docker build -t {manifest['name']} . && docker run --gpus all -p 8000:8000 {manifest['name']}
# The engine is built at first start, on the GPU that runs it (engines are per GPU and TensorRT version).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
EXPOSE 8000
CMD ["sh", "-c", "test -f model.engine || python build_engine.py; exec python server.py --host 0.0.0.0 --port 8000"]
"""


def _has_chain(module: Any, chain: str) -> bool:
    obj = module
    for part in chain.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True
