"""The `export` job: a frozen version as a zip in COCO, YOLO, VOC (detect) or class folders
(classify), written once to the store. Exports are deterministic (sorted entries, fixed
timestamps), so exporting a version twice gives the same bytes."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from labelling.errors import Invalid
from labelling.formats import WRITERS
from labelling.formats.common import ZipOut
from labelling.schemas import DATASET_ID, VERSION_ID
from labelling.versions import get_version
from tango.datasets import load_version
from tango.queue import JobContext
from tango.runtime import ServiceRuntime

ExportFormat = Literal["coco", "yolo", "voc", "folders"]


class ExportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str = Field(pattern=DATASET_ID)
    version: str = Field(pattern=VERSION_ID)
    format: ExportFormat


def export_key(dataset_id: str, version: str, fmt: str) -> str:
    return f"datasets/{dataset_id}/{version}/exports/{fmt}.zip"


def check_format(task: str, fmt: str) -> None:
    if task not in WRITERS[fmt].TASKS:
        fits = [name for name, w in WRITERS.items() if task in w.TASKS]
        raise Invalid(f"{fmt} holds {'/'.join(WRITERS[fmt].TASKS)} labels; export this {task} version as "
                      f"{' or '.join(fits)}")


def precheck(runtime: ServiceRuntime, params: ExportParams) -> None:
    version = get_version(runtime.db, runtime.store, dataset_id=params.dataset_id, version=params.version)
    manifest = load_version(runtime.store, version.dataset_id, version.version)
    check_format(manifest.task, params.format)


def run_export(ctx: JobContext, params: ExportParams) -> dict[str, Any]:
    """Export a frozen dataset version as a zip (COCO, YOLO, VOC or class folders)."""
    key = export_key(params.dataset_id, params.version, params.format)
    if not ctx.store.exists(key):
        manifest = load_version(ctx.store, params.dataset_id, params.version)
        check_format(manifest.task, params.format)
        total = max(1, len(manifest.items))
        done = 0

        def read_image(image_key: str) -> bytes:
            nonlocal done
            done += 1
            if done % 100 == 0:
                ctx.progress(0.9 * done / total, f"{done}/{total} images")
            return ctx.store.get_bytes(image_key)

        tmp_root = ctx.settings.home / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tmp_root, prefix="export-") as tmp:
            path = Path(tmp) / "export.zip"
            out = ZipOut(path)
            try:
                WRITERS[params.format].write(manifest, read_image, out)
            finally:
                out.close()
            ctx.store.put_if_absent(key, path.read_bytes())
    data = ctx.store.get_bytes(key)
    return {"dataset_id": params.dataset_id, "version": params.version, "format": params.format, "key": key,
            "url": ctx.store.url_for(key), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "download": f"/datasets/{params.dataset_id}/versions/{params.version}/exports/{params.format}"}
