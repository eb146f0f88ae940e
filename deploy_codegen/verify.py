"""Prove a package: unpack it elsewhere, build a fresh virtualenv from its own requirements.txt
(offline), run its infer.py on the reference, compare with PyTorch, time it with benchmark.py.

TensorRT packages cannot run here: their report carries the static checks and says exactly
"generated and statically checked, not run".
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from deploy_codegen.options import TARGET_TABLE
from deploy_codegen.package import unpack
from deploy_codegen.package_files import runner
from deploy_codegen.wheelhouse import clean_env, venv_for

RUN_TIMEOUT = 600


def output_parity(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: dict) -> dict[str, Any]:
    result, ok = {}, True
    for name, want in expected.items():
        have = got.get(name)
        if have is None or have.shape != want.shape:
            result[name] = {"ok": False, "detail": f"expected shape {list(want.shape)}, got "
                                                   f"{None if have is None else list(have.shape)}"}
            ok = False
            continue
        diff = float(np.abs(have.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
        limit = tol["atol"] + tol["rtol"] * float(np.abs(want).max(initial=0.0))
        result[name] = {"max_abs_diff": diff, "limit": limit, "ok": diff <= limit}
        ok &= diff <= limit
    return {"outputs": result, "ok": bool(ok)}


def detection_agreement(expected: np.ndarray, got: np.ndarray, post: dict, tol: dict) -> dict[str, Any]:
    """After NMS on both: the share of reference boxes matched by a same-class box with IoU >= min_iou."""
    kw = dict(conf=post["conf"], iou=post["iou"], max_det=post["max_det"])
    matched = total = 0
    ious = []
    for ref, run in zip(runner.detect(expected, **kw), runner.detect(got, **kw)):
        total += len(ref["boxes"])
        if not len(ref["boxes"]) or not len(run["boxes"]):
            continue
        iou = runner.box_iou(ref["boxes"], run["boxes"])
        iou[ref["classes"][:, None] != run["classes"][None, :]] = 0.0
        best = iou.max(axis=1)
        ious += best.tolist()
        matched += int((best >= tol["min_iou"]).sum())
    agreement = matched / total if total else 1.0
    # vacuous: no reference box cleared the threshold (e.g. untrained weights), so nothing was compared.
    return {"reference_boxes": total, "matched": matched, "agreement": agreement, "vacuous": total == 0,
            "mean_best_iou": float(np.mean(ious)) if ious else None,
            "ok": agreement >= tol["min_agreement"]}


def _run(python: str, pkg: Path, args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([python, "-E", "-s", *args], cwd=pkg, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, env=clean_env())
    if proc.returncode != 0:
        raise RuntimeError(f"`python {' '.join(args)}` failed in the package's venv:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def verify_tarball(data: bytes, *, cache: Path, rounds: int = 20, warmup: int = 3, threads: int | None = None,
                   progress=lambda message: None) -> dict[str, Any]:
    """Verify one package tarball; returns its report (never raises for a failed check)."""
    with tempfile.TemporaryDirectory(prefix="tango-verify-") as tmp:
        pkg = unpack(data, Path(tmp))
        manifest = json.loads((pkg / "manifest.json").read_text())
        report: dict[str, Any] = {
            "package": manifest["package"], "model_id": manifest["model_id"], "target": manifest["target"],
            "precision": manifest["precision"],
            "static_checks": manifest["verification"].get("static_checks", []),
            "created_at": datetime.now(UTC).isoformat(),
        }
        static_ok = all(c["ok"] for c in report["static_checks"])
        if TARGET_TABLE[manifest["target"]].verification == "static":
            report.update(verified="static" if static_ok else "failed", status=manifest.get("status"),
                          devices={d: "generated, not run" for d in manifest["devices"]})
            return report
        try:
            report.update(_run_package(pkg, manifest, cache=cache, rounds=rounds, warmup=warmup,
                                       threads=threads, progress=progress))
            ok = static_ok and report["parity"]["ok"] and report["image_parity"]["ok"]
            report["verified"] = "run" if ok else "failed"
            report["status"] = ("ran in a fresh virtualenv from its own requirements.txt and matched PyTorch"
                                if ok else "ran, but a check failed (see parity and static_checks)")
        except (RuntimeError, LookupError, subprocess.SubprocessError, ValueError) as exc:
            report.update(verified="failed", status="could not run", error=str(exc)[-3000:])
        return report


def _run_package(pkg: Path, manifest: dict, *, cache: Path, rounds: int, warmup: int, threads: int | None,
                 progress) -> dict[str, Any]:
    name = manifest["package"]
    progress(f"{name}: virtualenv from its requirements.txt (offline)")
    env = venv_for((pkg / "requirements.txt").read_text(), cache)
    python = str(Path(env["venv"]) / "bin" / "python")
    here = [d for d in manifest["devices"] if d == "cpu"]
    if not here:
        raise RuntimeError(f"none of the package's devices {manifest['devices']} is on this machine (cpu only)")
    tol = json.loads((pkg / "reference" / "tolerance.json").read_text())
    with np.load(pkg / "reference" / "expected.npz") as saved:
        expected = {k: saved[k] for k in saved.files}
    # benchmark.py runs on reference/input.npy and saves that output too: one interpreter start.
    progress(f"{name}: benchmark.py on the reference input ({warmup} warm-up, {rounds} rounds)")
    bench = _run(python, pkg, ["benchmark.py", "--device", "cpu", "--warmup", str(warmup), "--rounds", str(rounds),
                               "--save-raw", "raw.npz", *(["--threads", str(threads)] if threads else [])])
    with np.load(pkg / "raw.npz") as saved:
        got = {k: saved[k] for k in saved.files}
    parity = output_parity(expected, got, tol)
    if manifest["task"] == "detect":
        det = detection_agreement(expected[manifest["outputs"][0]], got[manifest["outputs"][0]],
                                  manifest["postprocess"], tol["detection"])
        parity["detection"] = det
        parity["ok"] = parity["ok"] and det["ok"]
    progress(f"{name}: infer.py on the reference image")
    image_run = _run(python, pkg, ["infer.py", "reference/sample.png", "--device", "cpu",
                                   "--save-raw", "raw_image.npz"])
    with np.load(pkg / "raw_image.npz") as saved:
        image_parity = output_parity(expected, {k: saved[k] for k in saved.files}, tol)
    return {
        "environment": {"how": "fresh venv; pip install --no-index --find-links <wheelhouse repacked from the "
                               "service's installed distributions> -r requirements.txt",
                        "linked": env["linked"], "venv_reused": env["reused"],
                        "install_seconds": env["install_seconds"]},
        "runtime": bench["runtime"],
        "parity": parity,
        "image_parity": {**image_parity, "json": image_run["results"][0]},
        "latency": {**{k: bench[k] for k in ("median_ms", "p90_ms", "min_ms", "rounds", "warmup", "batch")},
                    "threads": threads or "runtime default"},
        "devices": {d: "run" if d in here else f"generated, not run (no {d} device here)" for d in manifest["devices"]},
    }


def summary_row(report: dict[str, Any]) -> dict[str, Any]:
    parity = report.get("parity") or {}
    diffs = [o.get("max_abs_diff") for o in (parity.get("outputs") or {}).values() if "max_abs_diff" in o]
    det = parity.get("detection") or {}
    return {"package": report["package"], "target": report["target"], "verified": report["verified"],
            "max_abs_diff": max(diffs) if diffs else None, "detection_agreement": det.get("agreement"),
            "median_ms": (report.get("latency") or {}).get("median_ms"), "status": report.get("status")}


def table_markdown(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    lines = ["| package | verified | max abs diff | box agreement | median ms |", "|---|---|---|---|---|"]
    lines += [f"| {r['package']} | {r['verified']} | {fmt(r['max_abs_diff'], '.2e')} | "
              f"{fmt(r['detection_agreement'], '.3f')} | {fmt(r['median_ms'], '.2f')} |" for r in rows]
    return "\n".join(lines)
