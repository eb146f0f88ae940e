"""The `generate` and `verify` jobs: build packages for a model's targets, store them, prove them."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deploy_codegen.options import TARGET_TABLE, TargetOptions, package_name, resolve_all
from deploy_codegen.package import CODEGEN_VERSION, assemble, sample_image, tarball
from deploy_codegen.package_files import runner
from deploy_codegen.records import Packages
from deploy_codegen.source import MODEL_ID, SourceModel, load_source
from deploy_codegen.tune import latest_tuning
from deploy_codegen.verify import summary_row, table_markdown, verify_tarball
from tango.store import Store

NAME = r"^[a-z0-9][a-z0-9_.-]{0,79}$"


class GenerateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(pattern=MODEL_ID, description="a model autonn exported to models/<id>/")
    targets: list[str] = Field(default_factory=lambda: list(TARGET_TABLE), min_length=1, max_length=16)
    options: dict[str, TargetOptions] = Field(default_factory=dict, description="per target, see GET /targets")
    verify: bool = True
    rounds: int = Field(20, ge=1, le=1000, description="timed rounds of verification's benchmark")
    warmup: int = Field(3, ge=0, le=100)
    threads: int | None = Field(None, ge=1, le=512, description="CPU threads while timing; default: the runtime's")


class VerifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(pattern=MODEL_ID)
    packages: list[str] | None = Field(None, description="package names or targets; default: all of the model's")
    rounds: int = Field(20, ge=1, le=1000)
    warmup: int = Field(3, ge=0, le=100)
    threads: int | None = Field(None, ge=1, le=512)


def cache_dir(settings) -> Path:  # noqa: ANN001
    """Wheelhouse, linked folders and venvs shared by verification jobs on this machine."""
    return Path(settings.home) / "cache" / "deploy_codegen"


def package_key(model_id: str, name: str) -> str:
    return f"packages/{model_id}/{name}.tar.gz"


def fingerprint(source: SourceModel, target: str, opts: TargetOptions, tuning: dict | None) -> str:
    payload = [CODEGEN_VERSION, source.onnx_sha256, source.torchscript_sha256, target, opts.model_dump(),
               (tuning or {}).get("job_id"), source.card.get("input"), source.card.get("postprocess")]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def stored_fingerprint(store: Store, key: str) -> str | None:
    with tarfile.open(fileobj=io.BytesIO(store.get_bytes(key)), mode="r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/manifest.json")), None)
        return json.load(tar.extractfile(member)).get("fingerprint") if member else None


def calibration_samples(store: Store, source: SourceModel, *, count: int = 32) -> tuple[np.ndarray, str]:
    """int8 calibration data: training images of the model's dataset version, else seeded synthetic
    pictures (said so in the manifest: synthetic calibration is only a placeholder)."""
    from PIL import Image

    manifest = {"input": {"shape": source.input_shape}, "preprocess": source.preprocess_spec()}
    ds = source.card.get("dataset") or {}
    dataset_id, version = ds.get("dataset_id") or ds.get("id"), ds.get("version")
    if dataset_id and version:
        try:
            from tango.datasets import load_version

            items = [i for i in load_version(store, dataset_id, version).items if i.split == "train"][:count]
            arrays = [runner.to_tensor(Image.open(io.BytesIO(store.get_bytes(i.key))), manifest) for i in items]
            if arrays:
                return np.stack(arrays), f"{len(arrays)} training images of dataset {dataset_id}@{version}"
        except (LookupError, ValueError, OSError):
            pass
    h, w = source.input_shape[2:]
    arrays = [runner.to_tensor(sample_image(h, w, seed=s), manifest) for s in range(min(count, 16))]
    return np.stack(arrays), "synthetic pictures (the card names no dataset): replace before relying on int8"


def generate(ctx, params: GenerateParams) -> dict[str, Any]:  # noqa: ANN001
    """Build, store and (unless verify is false) verify a package per target."""
    store, packages = ctx.store, Packages.of(ctx.runtime)
    options = resolve_all(params.targets, params.options)
    if "tvm" in options:  # this machine's CPU by name, so the fingerprint says what was compiled for
        from deploy_codegen.targets.tvm import resolve_cpu

        options["tvm"].cpu = resolve_cpu(options["tvm"].cpu)
    source = load_source(store, params.model_id)
    n = len(options)
    results, rows = [], []
    with tempfile.TemporaryDirectory(prefix="tango-codegen-") as work:
        for i, (target, opts) in enumerate(options.items()):
            base = i / n

            def step(message: str, within: float = 0.0, base: float = base) -> None:
                ctx.progress(base + within / n, message)

            step(f"{target}: building ({i + 1}/{n})")
            tuning = latest_tuning(store, source, opts) if opts.tune else None
            if opts.tune and tuning is None:
                raise LookupError(f"no tuning database for model {source.model_id!r} with num_cores "
                                  f"{opts.num_cores} and cpu {opts.cpu}; run a `tune` job first")
            name = package_name(target, opts)
            fp = fingerprint(source, target, opts, tuning)
            row = packages.get(source.model_id, name)
            if row is not None and row["fingerprint"] != fp:
                name = f"{name}-{fp[:8]}"
                row = packages.get(source.model_id, name)
            key = package_key(source.model_id, name)
            if row is None or row["fingerprint"] != fp:
                if store.exists(key) and stored_fingerprint(store, key) == fp:
                    data = store.get_bytes(key)  # a redelivered job already wrote it
                    manifest = None
                else:
                    calibration, calib_note = (calibration_samples(store, source)
                                               if opts.precision == "int8" else (None, None))
                    manifest = assemble(source=source, target=target, name=name, opts=opts,
                                        workdir=Path(work), store=store,
                                        progress=lambda m: step(m, 0.2), tuning=tuning, calibration=calibration,
                                        extra={"fingerprint": fp, **({"calibration_source": calib_note}
                                                                     if calib_note else {})})
                    data = tarball(Path(work) / name)
                    store.put_if_absent(key, data)
                if manifest is None:
                    manifest = _manifest_of(data)
                row = packages.put(model_id=source.model_id, name=name, target=target, options=opts.model_dump(),
                                   fingerprint=fp, key=key, sha256=hashlib.sha256(data).hexdigest(),
                                   size=len(data), manifest=manifest, job_id=ctx.job_id)
            else:
                data = store.get_bytes(key)
            entry = {"name": name, "target": target, "key": key, "url": store.url_for(key),
                     "sha256": row["sha256"], "size": row["size"]}
            if params.verify:
                step(f"{name}: verifying", 0.5)
                report = _verify_and_record(ctx, packages, row, data, params, progress=lambda m: step(m, 0.6))
                entry["verified"] = report["verified"]
                rows.append(summary_row(report))
            results.append(entry)
    ctx.progress(1.0, "packages ready")
    out: dict[str, Any] = {"model_id": source.model_id, "packages": results}
    if rows:
        out.update(table=rows, table_markdown=table_markdown(rows))
    return out


def _manifest_of(data: bytes) -> dict[str, Any]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/manifest.json"))
        return json.load(tar.extractfile(member))


def _verify_and_record(ctx, packages: Packages, row: dict, data: bytes, params: GenerateParams | VerifyParams,  # noqa: ANN001
                       progress) -> dict[str, Any]:
    report = verify_tarball(data, cache=cache_dir(ctx.settings), rounds=params.rounds, warmup=params.warmup,
                            threads=params.threads, progress=progress)
    report["job_id"] = ctx.job_id
    report_key = f"packages/{row['model_id']}/reports/{ctx.job_id}/{row['name']}.json"
    ctx.store.put_if_absent(report_key, json.dumps(report, indent=2, sort_keys=True).encode())
    packages.set_report(row["model_id"], row["name"], report=report, report_key=report_key)
    return report


def verify(ctx, params: VerifyParams) -> dict[str, Any]:  # noqa: ANN001
    """Verify stored packages again (e.g. after the wheelhouse or machine changed)."""
    packages = Packages.of(ctx.runtime)
    rows = select_packages(packages, params.model_id, params.packages)
    table = []
    for i, row in enumerate(rows):
        ctx.progress(i / len(rows), f"{row['name']}: verifying ({i + 1}/{len(rows)})")
        report = _verify_and_record(ctx, packages, row, ctx.store.get_bytes(row["key"]), params,
                                    progress=lambda m, i=i: ctx.progress(i / len(rows), m))
        table.append(summary_row(report))
    return {"model_id": params.model_id, "table": table, "table_markdown": table_markdown(table)}


def select_packages(packages: Packages, model_id: str, wanted: list[str] | None) -> list[dict[str, Any]]:
    rows = packages.for_model(model_id)
    if not rows:
        raise LookupError(f"model {model_id!r} has no packages yet; run a `generate` job first")
    if wanted is None:
        return rows
    chosen = []
    for name in wanted:
        row = packages.find(model_id, name)
        if row is None:
            raise LookupError(f"model {model_id!r} has no package {name!r}; it has "
                              f"{', '.join(r['name'] for r in rows)}")
        chosen.append(row)
    return chosen


