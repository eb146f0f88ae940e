"""ONNX Runtime target: model.onnx on the CPU execution provider, CUDA / TensorRT EP when present."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_codegen.pins import installed_version, requirement_lines
from deploy_codegen.targets import BuildInput, BuildOutput, Target, check, register_target


@register_target("onnxruntime")
class OnnxRuntimeTarget(Target):
    backend_file = "backend_onnxruntime.py"

    def build(self, inp: BuildInput) -> BuildOutput:
        notes = []
        if set(inp.options.devices) & {"cuda", "tensorrt"}:
            notes.append("CUDA / TensorRT execution providers: replace onnxruntime with onnxruntime-gpu "
                         f"=={installed_version('onnxruntime')} on the device; infer.py picks the provider "
                         "with --device and says which ones ran")
        return BuildOutput(
            artifacts={"model": "model.onnx", "sha256": inp.source.onnx_sha256},
            toolchain={"onnxruntime": installed_version("onnxruntime"), "onnx": installed_version("onnx")},
            requirements=requirement_lines(["onnxruntime", "numpy", "pillow"]),
            notes=notes,
        )

    def static_checks(self, pkg: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        import onnxruntime as ort

        results = super().static_checks(pkg, manifest)
        try:
            sess = ort.InferenceSession(str(pkg / "model.onnx"), providers=["CPUExecutionProvider"])
            names = [o.name for o in sess.get_outputs()]
            results.append(check("onnxruntime loads model.onnx with the manifest's outputs",
                                 names == manifest["outputs"], f"outputs {names}"))
        except Exception as exc:  # ORT raises its own exception types
            results.append(check("onnxruntime loads model.onnx", False, str(exc)[:500]))
        return results
