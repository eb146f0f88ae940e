"""`tango run PROJECT.yaml`: a whole project end to end against the running stack (or an embedded
one it starts), printed as a report."""

from __future__ import annotations

import io
import json
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from tango.client import ServiceClient, ServiceError


def sample_zip(data: dict[str, Any], classes: list[str]) -> bytes:
    """The example's data as the zip a person would upload: class folders or YOLO labels."""
    from PIL import Image

    from tango import sampledata

    size, limit, seed = int(data.get("size", 32)), int(data.get("limit", 1000)), int(data.get("seed", 0))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if data["sample"] == "digits":
            images, labels = sampledata.make_digits(size=size, seed=seed)
            for i, (image, label) in enumerate(zip(images[:limit], labels[:limit], strict=True)):
                png = io.BytesIO()
                Image.fromarray(image).save(png, format="PNG")
                zf.writestr(f"{classes[int(label)]}/{i:05d}.png", png.getvalue())
        elif data["sample"] == "shapes":
            with tempfile.TemporaryDirectory() as tmp:
                root = sampledata.write_yolo_dataset(sampledata.make_shapes(limit, size=size, seed=seed),
                                                     Path(tmp) / "shapes", classes)
                for path in sorted(Path(root).rglob("*")):
                    if path.is_file():
                        zf.write(path, path.relative_to(root).as_posix())
        else:
            raise typer.BadParameter(f"unknown sample {data['sample']!r}: digits or shapes")
    return buf.getvalue()


def run_project(path: Path, *, report_json: Path | None = None) -> None:
    from tango.cli import _readiness, _settings, console
    from tango.credentials import user_token
    from tango.embedded import EmbeddedStack

    spec = yaml.safe_load(path.read_text())
    data = spec.pop("data", None)
    settings = _settings()
    stack = None
    if not all(ok for ok, _ in _readiness(settings).values()):
        console.print(f"starting the embedded stack in {settings.home} …")
        stack = EmbeddedStack(settings)
        stack.start()
        settings = _settings()
    try:
        with ServiceClient(settings.project_manager_url, token=user_token(settings), timeout=300) as pm:
            project = pm.request("POST", "/projects", json=spec)
            console.print(f"project {project['name']!r} ({project['id']})")
            imports = []
            if data:
                body = sample_zip(data, spec["classes"])
                job = pm.request("POST", f"/projects/{project['id']}/labelling/imports", content=body,
                                 headers={"Content-Type": "application/zip"})
                imports.append(job["id"])
                console.print(f"uploaded {len(body) / 1e6:.1f} MB of {data['sample']} images (import job {job['id']})")
            run = pm.request("POST", f"/projects/{project['id']}/runs", json={"import_job_ids": imports})
            final = follow_run(pm, project["id"], run["id"])
            if report_json is not None:
                report_json.write_text(json.dumps({"project": project, "run": final}, indent=2, default=str))
            print_report(pm, project, final)
            if final["state"] != "succeeded":
                raise typer.Exit(1)
    except ServiceError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    finally:
        if stack is not None:
            stack.stop()


def follow_run(pm: ServiceClient, project_id: str, run_id: str) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tango.cli import console

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[message]}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("pipeline", total=1.0, message="queued")
        while True:
            run = pm.request("GET", f"/projects/{project_id}/runs/{run_id}")
            bar.update(task, completed=run["progress"], message=run["message"][:70])
            if run["state"] in ("succeeded", "failed", "cancelled"):
                return run
            time.sleep(1.0)


def print_report(pm: ServiceClient, project: dict[str, Any], run: dict[str, Any]) -> None:
    from tango.cli import console

    stages = Table("stage", "state", "detail")
    for s in run["stages"]:
        detail = (s["result"] or {}).get("error") or (s["log"].strip().splitlines() or [""])[-1]
        stages.add_row(s["name"], s["state"], detail[:90])
    console.print(stages)
    if run["state"] != "succeeded":
        console.print(f"[red]run {run['state']}:[/red] {run['error'] or run['message']}")
        return
    report = run["result"]["report"]
    lat, metric = report["latency"], report["metric"]
    console.print(f"chosen architecture: {json.dumps(report['arch'])}")
    console.print(f"{metric['name']}: {metric['val']:.4f} (validation)"
                  + (f", {metric['test']:.4f} (test)" if metric.get("test") is not None else ""))
    measured = f"{lat['measured_ms']:.3f} ms measured" if lat.get("measured_ms") else "not measured"
    console.print(f"latency on {project['device']}: {lat.get('predicted_ms') or 0:.3f} ms predicted, {measured}, "
                  f"budget {project['budget_ms']:g} ms ({'met' if report['meets_budget'] else 'NOT met'})")
    packages = Table("package", "target", "verified", "max abs diff vs PyTorch", "median ms")
    for pk in report["packages"]:
        r = pk.get("summary") or {}
        packages.add_row(str(pk.get("name")), str(pk.get("target")), str(r.get("verified", "")),
                         f"{r['max_abs_diff']:.2e}" if isinstance(r.get("max_abs_diff"), float) else "",
                         f"{r['median_ms']:.3f}" if isinstance(r.get("median_ms"), float) else "")
    console.print(packages)
    base = f"{pm.base_url}/projects/{project['id']}/runs/{run['id']}"
    console.print(f"report: {base}/report?format=html (JSON: {base}/report)")
