"""deploy_codegen's REST API (routes only): the targets table, packages and their reports, and the
uniform Job resource (kinds generate, verify, tune)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import Response

from deploy_codegen.options import table_public
from deploy_codegen.records import Packages
from deploy_codegen.runtime import build_runtime
from deploy_codegen.verify import summary_row, table_markdown
from tango.settings import Settings
from tango.store import ArtifactMissing, InvalidKey
from tango.web import RuntimeDep, create_service_app

DESCRIPTION = ("Per-runtime code packages (PyTorch, ONNX Runtime, TVM, TensorRT) of autonn's models, "
               "with their parity and latency reports. POST /jobs with kind `generate`, `verify` or `tune`.")
# Names as they appear in store keys; anything else (slashes, dots-only, traversal) is refused.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")

router = APIRouter(tags=["packages"])


def _name(value: str, what: str) -> str:
    if not _NAME.match(value) or ".." in value:
        raise HTTPException(404, detail=f"{what} {value!r} is not a valid name (letters, digits, '.', '_', '-')")
    return value


def _package(runtime, model_id: str, name: str) -> dict[str, Any]:  # noqa: ANN001
    row = Packages.of(runtime).find(_name(model_id, "model id"), _name(name, "package"))
    if row is None:
        raise HTTPException(404, detail=f"model {model_id!r} has no package {name!r}; "
                                        f"GET /packages/{model_id} lists them, a `generate` job makes them")
    return row


def _public(row: dict[str, Any]) -> dict[str, Any]:
    report = row["report"]
    return {"name": row["name"], "target": row["target"], "options": row["options"], "key": row["key"],
            "sha256": row["sha256"], "size": row["size"], "verified": row["verified"],
            "download": f"/packages/{row['model_id']}/{row['name']}",
            "summary": summary_row(report) if report else None,
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


@router.get("/targets")
def list_targets() -> list[dict[str, Any]]:
    """The declarative table of targets and the options each accepts."""
    return table_public()


@router.get("/packages/{model_id}")
def list_packages(model_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    rows = Packages.of(runtime).for_model(_name(model_id, "model id"))
    if not rows:
        raise HTTPException(404, detail=f"model {model_id!r} has no packages; POST /jobs "
                                        f"{{\"kind\": \"generate\", \"params\": {{\"model_id\": \"{model_id}\"}}}}")
    summaries = [summary_row(r["report"]) for r in rows if r["report"]]
    return {"model_id": model_id, "packages": [_public(r) for r in rows],
            "table_markdown": table_markdown(summaries) if summaries else ""}


@router.get("/packages/{model_id}/{name}", response_class=Response,
            responses={200: {"content": {"application/gzip": {}}}})
def download_package(model_id: str, name: str, runtime: RuntimeDep) -> Response:
    """The package tar.gz, by package name (`tvm-tuned`) or target (`tvm`, its newest package)."""
    row = _package(runtime, model_id, name)
    try:
        data = runtime.store.get_bytes(row["key"])
    except (ArtifactMissing, InvalidKey) as exc:
        raise HTTPException(404, detail=f"package {row['name']!r} is recorded but its file is gone: {exc}") from exc
    filename = f"{row['model_id']}-{row['name']}.tar.gz"
    return Response(data, media_type="application/gzip",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "ETag": f'"{row["sha256"]}"'})


@router.get("/packages/{model_id}/{name}/manifest")
def package_manifest(model_id: str, name: str, runtime: RuntimeDep) -> dict[str, Any]:
    return _package(runtime, model_id, name)["manifest"]


@router.get("/packages/{model_id}/{name}/report")
def package_report(model_id: str, name: str, runtime: RuntimeDep) -> dict[str, Any]:
    row = _package(runtime, model_id, name)
    if row["report"] is None:
        raise HTTPException(404, detail=f"package {row['name']!r} has not been verified; POST /jobs "
                                        f"{{\"kind\": \"verify\", \"params\": {{\"model_id\": \"{model_id}\"}}}}")
    return row["report"]


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(build_runtime(settings), routers=[router], description=DESCRIPTION)


app = create_app()
