"""Assemble one package folder (manifest, labels, model, reference, runtime artifact, runner, server,
requirements, Dockerfile, README, benchmark) and pack it as a reproducible tar.gz."""

from __future__ import annotations

import gzip
import io
import json
import platform
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from deploy_codegen.options import TARGET_TABLE, TargetOptions
from deploy_codegen.package_files import runner
from deploy_codegen.source import SourceModel
from deploy_codegen.targets import PACKAGE_FILES, BuildInput, get_target

CODEGEN_VERSION = "1"
COMMON_FILES = ("runner.py", "infer.py", "server.py", "benchmark.py")
DETECT_DEFAULTS = {"conf": 0.25, "iou": 0.45, "max_det": 300}
TOLERANCE = {"fp32": {"atol": 1e-4, "rtol": 1e-4}, "fp16": {"atol": 5e-2, "rtol": 1e-2},
             "int8": {"atol": 2.5e-1, "rtol": 5e-2}}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sample_image(height: int, width: int, *, seed: int = 0):
    """A seeded synthetic picture (gradient, shapes, noise), larger than the input so resizing is
    exercised: the reference a package is checked on, and an image to try infer.py with."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    h, w = int(height * 1.25) + 3, int(width * 1.5) + 7
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255.0 / w, yy * 255.0 / h, (xx + yy) * 127.0 / (w + h)], axis=-1)
    image = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        x1, y1 = x0 + int(rng.integers(w // 8, w // 2)), y0 + int(rng.integers(h // 8, h // 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
    return image


def postprocess_spec(source: SourceModel) -> dict[str, Any]:
    if source.task == "classify":
        return {"type": "softmax, top-k", "top_k": 5}
    post = {**DETECT_DEFAULTS, **(source.card.get("postprocess") or {})}
    return {"type": "decoded YOLO head (xywh in input pixels + class scores), class-aware greedy NMS in numpy",
            "conf": float(post["conf"]), "iou": float(post["iou"]), "max_det": int(post["max_det"]),
            "boxes": "xyxy, in the original image's pixels"}


def base_manifest(source: SourceModel, target: str, name: str, opts: TargetOptions) -> dict[str, Any]:
    card = source.card
    return {
        "name": source.model_id, "package": name, "model_id": source.model_id, "target": target,
        "precision": opts.precision, "devices": list(opts.devices), "dynamic_batch": opts.dynamic_batch,
        "max_batch": opts.max_batch if opts.dynamic_batch else int(source.input_shape[0]),
        "options": opts.model_dump(), "task": source.task, "labels": source.classes,
        "model": {"onnx_sha256": source.onnx_sha256, "torchscript_sha256": source.torchscript_sha256,
                  "card_onnx_sha256": (card.get("onnx") or {}).get("sha256"), "opset": (card.get("onnx") or {}).get("opset"),
                  "arch": card.get("arch"), "params": card.get("params"), "flops": card.get("flops"),
                  "metric": card.get("metric")},
        "input": {"name": source.input_name, "shape": source.input_shape,
                  "dtype": card["input"].get("dtype", "float32"), "layout": card["input"].get("layout", "NCHW")},
        "outputs": source.output_names,
        "preprocess": source.preprocess_spec(),
        "postprocess": postprocess_spec(source),
        "reference": {"image": "reference/sample.png", "input": "reference/input.npy",
                      "expected": "reference/expected.npz", "tolerance": "reference/tolerance.json",
                      "produced_by": "the model's TorchScript program in PyTorch"},
    }


def write_reference(pkg: Path, source: SourceModel, manifest: dict[str, Any]) -> dict[str, Any]:
    ref = pkg / "reference"
    ref.mkdir()
    h, w = runner.input_hw(manifest)
    image = sample_image(h, w)
    image.save(ref / "sample.png")
    x = runner.to_tensor(image, manifest)[None]
    np.save(ref / "input.npy", x)
    expected = source.torch_outputs(x)
    np.savez(ref / "expected.npz", **dict(zip(source.output_names, expected)))
    tolerance = {**TOLERANCE[manifest["precision"]], "rule": "max|got - expected| <= atol + rtol * max|expected|"}
    if source.task == "detect":
        tolerance["detection"] = {"min_iou": 0.9, "min_agreement": 0.95,
                                  "rule": "share of reference boxes (after NMS) matched by a same-class box "
                                          "with IoU >= min_iou"}
    (ref / "tolerance.json").write_text(json.dumps(tolerance, indent=2))
    return {"output_shapes": {n: list(o.shape) for n, o in zip(source.output_names, expected)}}


def readme(manifest: dict[str, Any], checks: list[dict[str, Any]]) -> str:
    m = manifest
    verified = m["verification"]
    lines = [
        f"# {m['model_id']} — {m['package']} package",
        "",
        f"{m['task']} model ({len(m['labels'])} classes) for **{m['target']}**, precision {m['precision']}, "
        f"devices {', '.join(m['devices'])}. Generated by Tango deploy_codegen.",
        "",
        f"Verification: {verified['how']}",
        "",
        "## Run",
        "",
        "```sh",
        "python -m venv .venv && .venv/bin/pip install -r requirements.txt",
    ]
    if m["target"] == "tensorrt":
        lines.append(".venv/bin/python build_engine.py          # once, on the GPU that runs it")
    lines += [
        ".venv/bin/python infer.py reference/sample.png   # image(s) in, JSON out",
        ".venv/bin/python benchmark.py --rounds 50        # median latency on the reference input",
        ".venv/bin/python server.py --port 8000           # Open Inference Protocol v2",
        "```",
        "",
        f"`infer.py --device` picks one of {m['devices']}; `--conf/--iou/--max-det` tune detection, "
        "`--top-k` classification; `--input-npy` and `--save-raw` pass raw tensors.",
        "",
        "## Input and output",
        "",
        f"- input `{m['input']['name']}` {m['input']['shape']} {m['input']['dtype']} {m['input']['layout']}; "
        f"preprocessing: resize to {m['preprocess']['resize']} ({m['preprocess']['interpolation']}), "
        f"{m['preprocess']['color']}, scale {m['preprocess']['scale']}",
        f"- outputs {m['outputs']} {m.get('output_shapes', {})}",
        f"- postprocessing: {m['postprocess']['type']}",
        "",
        "## Files",
        "",
        "manifest.json (everything above, machine-readable), labels.txt, model.onnx, reference/ (sample image, "
        "input, expected PyTorch output, tolerance), the runtime artifact "
        f"({', '.join(_artifact_names(m['artifacts']))}), runner.py + backend.py, infer.py, server.py, "
        "benchmark.py, requirements.txt (pinned), Dockerfile.",
        "",
        "## Static checks",
        "",
        *[f"- [{'x' if c['ok'] else ' '}] {c['check']}" for c in checks],
    ]
    if m.get("notes"):
        lines += ["", "## Notes", "", *[f"- {n}" for n in m["notes"]]]
    return "\n".join(lines) + "\n"


def _artifact_names(artifacts: dict[str, Any]) -> list[str]:
    names = []
    for value in artifacts.values():
        if isinstance(value, str) and "." in value and "/" not in value.strip("/") and len(value) < 64:
            names.append(value)
        elif isinstance(value, dict):
            names += [v for v in value.values() if isinstance(v, str) and v.endswith(".so")]
    return names or ["see manifest.json"]


def assemble(*, source: SourceModel, target: str, name: str, opts: TargetOptions, workdir: Path, store,
             progress=lambda message: None, tuning: dict | None = None, calibration=None,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the package folder; returns its manifest (with static checks)."""
    impl = get_target(target)
    pkg = workdir / name
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    manifest = {**base_manifest(source, target, name, opts), **(extra or {})}
    for file in COMMON_FILES:
        shutil.copy(PACKAGE_FILES / file, pkg / file)
    shutil.copy(PACKAGE_FILES / impl.backend_file, pkg / "backend.py")
    (pkg / "labels.txt").write_text("\n".join(source.classes) + "\n")
    (pkg / "model.onnx").write_bytes(source.onnx)
    progress(f"{name}: reference input and PyTorch output")
    manifest.update(write_reference(pkg, source, manifest))
    built = impl.build(BuildInput(source=source, options=opts, pkg=pkg, store=store, progress=progress,
                                  tuning=tuning, calibration=calibration))
    spec = TARGET_TABLE[target]
    how = ("run: infer.py in a fresh virtualenv made from this requirements.txt alone, outputs compared "
           "with PyTorch within reference/tolerance.json, then timed (report.json beside the package)"
           if spec.verification == "run" else built.manifest.get("status", "statically checked, not run"))
    manifest.update(built.manifest)
    manifest.update({
        "artifacts": built.artifacts,
        "toolchain": {**built.toolchain, "python": platform.python_version(), "numpy": np.__version__},
        "requirements": built.requirements,
        "verification": {"method": spec.verification, "how": how},
        "notes": built.notes,
        "generated_by": {"service": "deploy_codegen", "version": CODEGEN_VERSION, "commit": git_commit()},
    })
    (pkg / "requirements.txt").write_text(
        f"# {name} package of {source.model_id}: exact versions it was built and verified with\n"
        + "\n".join(built.requirements) + "\n")
    (pkg / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (pkg / "Dockerfile").write_text(impl.dockerfile(manifest))
    progress(f"{name}: static checks")
    checks = impl.static_checks(pkg, manifest)
    manifest["verification"]["static_checks"] = checks
    (pkg / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (pkg / "README.md").write_text(readme(manifest, checks))
    return manifest


def tarball(pkg: Path) -> bytes:
    """A reproducible tar.gz of the folder under its own name (sorted, zero times, no owners)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted([pkg, *pkg.rglob("*")]):
                if "__pycache__" in path.parts:
                    continue
                info = tar.gettarinfo(str(path), arcname=str(Path(pkg.name) / path.relative_to(pkg)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if path.is_symlink():
                    continue
                if info.isfile():
                    info.mode = 0o755 if path.suffix in (".so", ".sh") else 0o644
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                elif info.isdir():
                    info.mode = 0o755
                    tar.addfile(info)
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> Path:
    """Unpack a package tarball; refuses members that would land outside dest."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
        roots = {m.name.split("/", 1)[0] for m in tar.getmembers()}
    if len(roots) != 1:
        raise ValueError(f"a package has one top folder; this one has {sorted(roots)}")
    return dest / roots.pop()
