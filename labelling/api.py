"""labelling's REST API (routes only): datasets, classes, imports, images and their labels,
review, bulk edits, next/undo for the keyboard-first UI, suggestions, the active-learning queue,
frozen versions and exports; plus health, readiness and the uniform Job resource.

Who acts is the `X-Tango-User` header ("anonymous" without it) until authentication lands."""

from __future__ import annotations

import re

import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import fsspec
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from labelling import annotations, catalog, suggestions, versions, worklist
from labelling import __doc__ as DESCRIPTION
from labelling.errors import Invalid, NotFound
from labelling.exporter import ExportFormat, check_format, export_key
from labelling.images import MEDIA_TYPES
from labelling.importer import Format
from labelling.runtime import build_runtime
from labelling.schemas import (BulkCreate, BulkResult, ClassCreate, ClassPublic, DatasetCreate, DatasetPublic,
                               HistoryPublic, ImagePage, ImagePublic, LabelCreate, LabelPublic, NextPublic,
                               QueuePublic, ReviewCreate, SuggestionPage, UndoPublic, VersionCreate,
                               VersionPublic)
from labelling.uploads import receive_zip, upload_limit
from tango.datasets import load_version
from tango.runtime import ServiceRuntime
from tango.settings import Settings
from tango.spec import JobCreate, JobPublic
from tango.web import RuntimeDep, create_service_app


def current_user(x_tango_user: Annotated[str | None, Header(max_length=128)] = None) -> str:
    return (x_tango_user or "").strip() or "anonymous"


User = Annotated[str, Depends(current_user)]
router = APIRouter(prefix="/datasets", tags=["datasets"])


def start_job(runtime: ServiceRuntime, kind: str, params: dict[str, Any]) -> JobPublic:
    """As POST /jobs does: validate (and precheck), record, enqueue."""
    clean = runtime.kinds.validate(JobCreate(kind=kind, params=params), runtime)
    job = runtime.jobs.create(kind=kind, params=clean)
    runtime.enqueue(job.id)
    return job.public()


@router.post("", status_code=201, response_model=DatasetPublic)
def create_dataset(body: DatasetCreate, runtime: RuntimeDep) -> DatasetPublic:
    catalog.create_dataset(runtime.db, body=body)
    return catalog.dataset_public(runtime.db, body.id)


@router.get("", response_model=list[DatasetPublic])
def list_datasets(runtime: RuntimeDep) -> list[DatasetPublic]:
    return [catalog.dataset_public(runtime.db, d) for d in catalog.list_dataset_ids(runtime.db)]


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset_id: str, runtime: RuntimeDep) -> DatasetPublic:
    return catalog.dataset_public(runtime.db, dataset_id)


@router.get("/{dataset_id}/classes", response_model=list[ClassPublic])
def list_classes(dataset_id: str, runtime: RuntimeDep) -> list[ClassPublic]:
    catalog.get_dataset(runtime.db, dataset_id)
    return catalog.class_public(runtime.db, dataset_id)


@router.post("/{dataset_id}/classes", status_code=201, response_model=ClassPublic)
def add_class(dataset_id: str, body: ClassCreate, runtime: RuntimeDep) -> ClassPublic:
    return catalog.add_class(runtime.db, dataset_id=dataset_id, name=body.name)


@router.patch("/{dataset_id}/classes/{class_id}", response_model=ClassPublic)
def rename_class(dataset_id: str, class_id: int, body: ClassCreate, runtime: RuntimeDep) -> ClassPublic:
    return catalog.rename_class(runtime.db, dataset_id=dataset_id, class_id=class_id, name=body.name)


@router.delete("/{dataset_id}/classes/{class_id}", status_code=204)
def delete_class(dataset_id: str, class_id: int, runtime: RuntimeDep) -> Response:
    catalog.delete_class(runtime.db, dataset_id=dataset_id, class_id=class_id)
    return Response(status_code=204)


@router.post("/{dataset_id}/imports", status_code=202, response_model=JobPublic,
             openapi_extra={"requestBody": {"content": {
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "file": {"type": "string", "format": "binary"}}}},
                 "application/zip": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_import(dataset_id: str, request: Request, runtime: RuntimeDep, user: User,
                        format: Format = "auto", add_new_classes: bool | None = None) -> JobPublic:
    """Upload a zip of images (and labels) and start its `import` job. The body is streamed to
    disk under its own limit (TANGO_MAX_UPLOAD_BYTES), not the app's small JSON body limit."""
    await run_in_threadpool(catalog.get_dataset, runtime.db, dataset_id)
    tmp_root = runtime.settings.home / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="upload-") as tmp:
        path = Path(tmp) / "upload.zip"
        await receive_zip(request, path, limit=upload_limit(runtime.settings))
        if not zipfile.is_zipfile(path):
            raise Invalid("the upload is not a zip archive; zip the images (and label files) and upload again")
        key = f"uploads/{uuid.uuid4().hex}/upload.zip"
        await run_in_threadpool(runtime.store.put_file, key, path)
    params = {"dataset_id": dataset_id, "source": {"upload_key": key}, "format": format,
              "add_new_classes": add_new_classes, "user": user}
    return await run_in_threadpool(start_job, runtime, "import", params)


@router.get("/{dataset_id}/images", response_model=ImagePage)
def list_images(dataset_id: str, runtime: RuntimeDep,
                state: Literal["all", "unlabelled", "labelled", "unreviewed", "approved", "rejected"] = "all",
                limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=1_000_000_000)) -> ImagePage:
    catalog.get_dataset(runtime.db, dataset_id)
    rows, total = catalog.list_images(runtime.db, dataset_id=dataset_id, state=state, limit=limit, offset=offset)
    return ImagePage(items=worklist.images_public(runtime.db, rows, dataset_id), total=total)


@router.get("/{dataset_id}/images/{image_id}", response_model=ImagePublic)
def get_image(dataset_id: str, image_id: str, runtime: RuntimeDep) -> ImagePublic:
    row = catalog.get_image(runtime.db, dataset_id=dataset_id, image_id=image_id)
    return worklist.images_public(runtime.db, [row], dataset_id)[0]


@router.get("/{dataset_id}/images/{image_id}/content", response_class=Response,
            responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}})
def image_content(dataset_id: str, image_id: str, runtime: RuntimeDep) -> Response:
    row = catalog.get_image(runtime.db, dataset_id=dataset_id, image_id=image_id)
    ext = row["key"].rsplit(".", 1)[-1]
    # Content-addressed: the bytes behind this URL never change.
    return Response(runtime.store.get_bytes(row["key"]), media_type=MEDIA_TYPES.get(ext, "application/octet-stream"),
                    headers={"Cache-Control": "private, max-age=31536000, immutable", "ETag": f'"{row["sha256"]}"'})


@router.put("/{dataset_id}/images/{image_id}/label", response_model=LabelPublic)
def save_label(dataset_id: str, image_id: str, body: LabelCreate, runtime: RuntimeDep, user: User) -> LabelPublic:
    return annotations.save_label(runtime.db, dataset_id=dataset_id, image_id=image_id, body=body, user=user)


@router.delete("/{dataset_id}/images/{image_id}/label", status_code=204)
def clear_label(dataset_id: str, image_id: str, runtime: RuntimeDep, user: User) -> Response:
    annotations.clear_label(runtime.db, dataset_id=dataset_id, image_id=image_id, user=user)
    return Response(status_code=204)


@router.post("/{dataset_id}/images/{image_id}/review", response_model=LabelPublic)
def review(dataset_id: str, image_id: str, body: ReviewCreate, runtime: RuntimeDep, user: User) -> LabelPublic:
    return annotations.review_label(runtime.db, dataset_id=dataset_id, image_id=image_id, state=body.state, user=user)


@router.get("/{dataset_id}/images/{image_id}/history", response_model=list[HistoryPublic])
def history(dataset_id: str, image_id: str, runtime: RuntimeDep,
            limit: int = Query(100, ge=1, le=1000)) -> list[HistoryPublic]:
    return annotations.history(runtime.db, dataset_id=dataset_id, image_id=image_id, limit=limit)


@router.post("/{dataset_id}/bulk", response_model=BulkResult)
def bulk(dataset_id: str, body: BulkCreate, runtime: RuntimeDep, user: User) -> BulkResult:
    return BulkResult(**annotations.bulk(runtime.db, dataset_id=dataset_id, user=user,
                                         **body.model_dump(exclude_none=True)))


@router.get("/{dataset_id}/next", response_model=NextPublic)
def next_image(dataset_id: str, runtime: RuntimeDep, source: Literal["auto", "queue", "pool"] = "auto",
               after: str | None = None) -> NextPublic:
    return worklist.next_image(runtime.db, dataset_id=dataset_id, source=source, after=after)


@router.post("/{dataset_id}/undo", response_model=UndoPublic)
def undo(dataset_id: str, runtime: RuntimeDep, user: User) -> UndoPublic:
    return annotations.undo(runtime.db, dataset_id=dataset_id, user=user)


@router.get("/{dataset_id}/queue", response_model=QueuePublic)
def queue(dataset_id: str, runtime: RuntimeDep) -> QueuePublic:
    return worklist.queue(runtime.db, dataset_id=dataset_id)


@router.get("/{dataset_id}/suggestions", response_model=SuggestionPage)
def list_suggestions(dataset_id: str, runtime: RuntimeDep,
                     state: Literal["open", "accepted", "rejected", "superseded"] | None = "open",
                     image_id: str | None = None, limit: int = Query(50, ge=1, le=500),
                     offset: int = Query(0, ge=0, le=1_000_000_000)) -> SuggestionPage:
    items, total = suggestions.list_suggestions(runtime.db, dataset_id=dataset_id, state=state, image_id=image_id,
                                                limit=limit, offset=offset)
    return SuggestionPage(items=items, total=total)


@router.post("/{dataset_id}/suggestions/{suggestion_id}/accept", response_model=LabelPublic)
def accept_suggestion(dataset_id: str, suggestion_id: str, runtime: RuntimeDep, user: User) -> LabelPublic:
    return suggestions.accept_suggestion(runtime.db, dataset_id=dataset_id, suggestion_id=suggestion_id, user=user)


@router.post("/{dataset_id}/suggestions/{suggestion_id}/reject", status_code=204)
def reject_suggestion(dataset_id: str, suggestion_id: str, runtime: RuntimeDep, user: User) -> Response:
    suggestions.reject_suggestion(runtime.db, dataset_id=dataset_id, suggestion_id=suggestion_id, user=user)
    return Response(status_code=204)


@router.post("/{dataset_id}/versions", status_code=201, response_model=VersionPublic)
def freeze_version(dataset_id: str, body: VersionCreate, runtime: RuntimeDep, user: User) -> VersionPublic:
    return versions.freeze(runtime.db, runtime.store, dataset_id=dataset_id, body=body, user=user)


@router.get("/{dataset_id}/versions", response_model=list[VersionPublic])
def list_versions(dataset_id: str, runtime: RuntimeDep) -> list[VersionPublic]:
    return versions.list_versions(runtime.db, runtime.store, dataset_id=dataset_id)


@router.get("/{dataset_id}/versions/{version}", response_model=VersionPublic)
def get_version(dataset_id: str, version: str, runtime: RuntimeDep) -> VersionPublic:
    return versions.get_version(runtime.db, runtime.store, dataset_id=dataset_id, version=version)


@router.get("/{dataset_id}/versions/{version}/manifest")
def get_manifest(dataset_id: str, version: str, runtime: RuntimeDep) -> dict[str, Any]:
    versions.get_version(runtime.db, runtime.store, dataset_id=dataset_id, version=version)
    return load_version(runtime.store, dataset_id, version).model_dump(mode="json")


@router.post("/{dataset_id}/versions/{version}/exports/{fmt}", status_code=202, response_model=JobPublic)
def start_export(dataset_id: str, version: str, fmt: ExportFormat, runtime: RuntimeDep) -> JobPublic:
    return start_job(runtime, "export", {"dataset_id": dataset_id, "version": version, "format": fmt})


@router.get("/{dataset_id}/versions/{version}/exports/{fmt}", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}}})
def download_export(dataset_id: str, version: str, fmt: ExportFormat, runtime: RuntimeDep) -> StreamingResponse:
    versions.get_version(runtime.db, runtime.store, dataset_id=dataset_id, version=version)
    check_format(load_version(runtime.store, dataset_id, version).task, fmt)
    key = export_key(dataset_id, version, fmt)
    if not runtime.store.exists(key):
        raise NotFound(f"{dataset_id}/{version} has no {fmt} export yet; start one with POST "
                       f"/datasets/{dataset_id}/versions/{version}/exports/{fmt} and wait for the job")

    def chunks() -> Iterator[bytes]:
        with fsspec.open(runtime.store.url_for(key), "rb") as f:
            while block := f.read(1 << 20):
                yield block

    return StreamingResponse(chunks(), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{dataset_id}-{version}-{fmt}.zip"'})


UPLOAD_ROUTE = re.compile(r"/datasets/[^/]+/imports")


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(build_runtime(settings), routers=[router], description=DESCRIPTION or "",
                              streamed=lambda path: UPLOAD_ROUTE.fullmatch(path) is not None)


app = create_app()
