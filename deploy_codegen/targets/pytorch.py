"""PyTorch target: the TorchScript program autonn exported, run by torch on CPU or CUDA."""

from __future__ import annotations

from deploy_codegen.pins import installed_version, requirement_lines
from deploy_codegen.targets import BuildInput, BuildOutput, Target, register_target


@register_target("pytorch")
class PyTorchTarget(Target):
    backend_file = "backend_pytorch.py"

    def build(self, inp: BuildInput) -> BuildOutput:
        (inp.pkg / "model.ts").write_bytes(inp.source.torchscript)
        notes = []
        if "cuda" in inp.options.devices:
            notes.append("CUDA: the pinned torch is the PyPI build with CUDA libraries; on a CPU-only "
                         "machine install torch from the CPU index instead to save ~5 GB")
        if inp.options.precision == "fp16":
            notes.append("fp16 halves the TorchScript weights on load; it needs a CUDA device")
        return BuildOutput(
            artifacts={"program": "model.ts", "format": "torchscript",
                       "sha256": inp.source.torchscript_sha256},
            toolchain={"torch": installed_version("torch")},
            requirements=requirement_lines(["torch", "numpy", "pillow"]),
            notes=notes,
        )
