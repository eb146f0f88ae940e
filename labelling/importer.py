"""The `import` job: images (JPEG/PNG/BMP/WebP) with or without labels (COCO, YOLO, VOC, Label
Studio, class folders) from an upload, a folder on the worker, or a zip or prefix in the store.

Every file is checked and reported on its own (good files kept, bad ones listed with a code and a
reason). Nothing is half-written: all files are staged and checked first; then the images go to
the store (content-addressed, so a retry rewrites nothing) and everything else reaches the DB in
one transaction, together with the job's outcome (so a redelivered job returns that outcome
instead of importing again). A refused import (an unusable or unsafe archive) writes nothing."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import fsspec
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from labelling import embeddings
from labelling.annotations import check_box, write_label
from labelling.archives import (Entry, ImportLimits, ImportRefused, Report, stage_folder, stage_store_prefix,
                                stage_zip)
from labelling.catalog import classes_of, get_dataset
from labelling.errors import Invalid
from labelling.formats import READERS, LabelFiles, LabelIn, Parsed
from labelling.formats.common import LABEL_SUFFIXES
from labelling.images import IMAGE_SUFFIXES, FileProblem, check_image
from labelling.records import T
from labelling.schemas import DATASET_ID, _class_name
from tango.datasets import image_key
from tango.jobs import utcnow
from tango.queue import JobContext
from tango.runtime import ServiceRuntime
from tango.settings import Settings
from tango.store import InvalidKey

Format = Literal["auto", "none", "coco", "yolo", "voc", "labelstudio", "folders"]
OTHER_IMAGE_SUFFIXES = frozenset({".gif", ".tif", ".tiff", ".heic", ".avif", ".ico", ".svg", ".jfif"})


class ImportSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    upload_key: str | None = Field(None, description="store key of a zip uploaded through the API")
    path: str | None = Field(None, description="a folder or .zip on the worker's disk")
    store_url: str | None = Field(None, description="a .zip or a folder (prefix) inside the store")

    @model_validator(mode="after")
    def _exactly_one(self) -> ImportSource:
        if sum(v is not None for v in (self.upload_key, self.path, self.store_url)) != 1:
            raise ValueError("give exactly one of upload_key, path or store_url")
        return self


class ImportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str = Field(pattern=DATASET_ID)
    source: ImportSource
    format: Format = Field("auto", description="label format; 'auto' finds it, 'none' imports images only")
    add_new_classes: bool | None = Field(None, description="default: only while the dataset has no classes")
    user: str = Field("anonymous", max_length=128)
    limits: ImportLimits = Field(default_factory=ImportLimits)


def import_root(settings: Settings) -> Path:
    return settings.home / "imports"


def _local_path(settings: Settings, raw: str) -> Path:
    path = Path(raw)
    if not path.is_absolute():
        raise Invalid(f"source.path {raw!r} must be absolute")
    # In production a path import may only read the folder set aside for it: an API user must
    # not be able to make the worker read anything else it can see.
    root = import_root(settings).resolve()
    if settings.env == "production" and not path.resolve().is_relative_to(root):
        raise Invalid(f"source.path must be inside {root} in production; copy the files there first")
    return path


def precheck(runtime: ServiceRuntime, params: ImportParams) -> None:
    dataset = get_dataset(runtime.db, params.dataset_id)
    reader = READERS.get(params.format)
    if reader is not None and dataset["task"] not in reader.TASKS:
        raise Invalid(f"format {params.format!r} holds {'/'.join(reader.TASKS)} labels; dataset "
                      f"{params.dataset_id!r} is a {dataset['task']} dataset")
    src = params.source
    try:
        if src.upload_key is not None:
            if not src.upload_key.startswith("uploads/") or not runtime.store.exists(src.upload_key):
                raise Invalid(f"no upload {src.upload_key!r} in the store; upload with POST "
                              f"/datasets/{params.dataset_id}/imports")
        elif src.store_url is not None:
            key = runtime.store.key_from_url(src.store_url)
            if not runtime.store.exists(key):
                raise Invalid(f"nothing is stored at {src.store_url!r}")
        elif not _local_path(runtime.settings, src.path).exists():
            raise Invalid(f"source.path {src.path!r} does not exist on this machine")
    except InvalidKey as exc:
        raise Invalid(str(exc)) from None


def _stage(ctx: JobContext, params: ImportParams, staging: Path, report: Report) -> list[Entry]:
    src, limits, store = params.source, params.limits, ctx.store
    if src.path is not None:
        path = _local_path(ctx.settings, src.path)
        return stage_zip(path, staging, limits, report) if path.is_file() else stage_folder(path, limits, report)
    key = src.upload_key if src.upload_key is not None else store.key_from_url(src.store_url)
    if key.endswith(".zip") or src.upload_key is not None:
        archive = staging / "archive.zip"
        with fsspec.open(store.url_for(key), "rb") as fin, archive.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        (staging / "files").mkdir()
        return stage_zip(archive, staging / "files", limits, report)
    return stage_store_prefix(store, key, staging, limits, report)


def _choose_reader(fmt: str, task: str, files: LabelFiles, images: list[str]):  # noqa: ANN202
    if fmt == "none":
        return None
    if fmt != "auto":
        reader = READERS[fmt]
        if not reader.detect(files, images):
            raise ImportRefused(f"format {fmt!r} was asked for, but the import holds no {fmt} labels")
        return reader
    for reader in READERS.values():
        # Class folders come last: any label file of another format wins over folder names.
        if task in reader.TASKS and reader.detect(files, images):
            return reader
    return None


@dataclass
class Staged:
    name: str
    path: Path
    sha256: str
    ext: str
    width: int
    height: int
    embedding: bytes
    label: dict | None  # {"class": name} | {"boxes": [(name, x1, y1, x2, y2)]}


def _resolve_label(label: LabelIn, width: int, height: int) -> dict:
    """A parsed label in pixels, or FileProblem."""
    if label.problem:
        raise FileProblem(*label.problem)
    if label.boxes is None:
        return {"class": label.class_name}
    boxes = []
    for b in label.boxes:
        sx, sy = (width, height) if b.normalized else (1, 1)
        try:
            boxes.append((b.cls, *check_box(b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy, width, height)))
        except ValueError as exc:
            raise FileProblem("box_outside_image" if "outside" in str(exc) else "invalid_label",
                              f"{label.source}: {b.cls} {exc}") from None
    return {"boxes": boxes}


def _check_classes(label: dict, allowed: set[str] | None, known: list[str]) -> None:
    names = [label["class"]] if "class" in label else [b[0] for b in label["boxes"]]
    for name in names:
        if name in known:
            continue
        if allowed is None:
            raise FileProblem("unknown_class", f"class {name!r} is not among the dataset's classes "
                                               f"({', '.join(known[:20]) or 'none'}); add it first or import "
                                               "with add_new_classes")
        if name not in allowed:
            raise FileProblem("unknown_class", f"class name {name!r} is not usable (no '/', '\\', control "
                                               "characters, '.' or '..')")


def _usable_names(names: list[str]) -> set[str]:
    usable = set()
    for name in names:
        try:
            usable.add(_class_name(name))
        except ValueError:
            pass
    return usable


def run_import(ctx: JobContext, params: ImportParams) -> dict[str, Any]:
    """Import images and labels; each file is kept or rejected with a reason."""
    db = ctx.runtime.db
    with db.begin() as conn:
        done = conn.execute(select(T.imports.c.result).where(T.imports.c.job_id == ctx.job_id)).first()
    if done is not None:
        return done.result
    dataset = get_dataset(db, params.dataset_id)
    known = [c["name"] for c in classes_of(db, params.dataset_id)]
    add_new = params.add_new_classes if params.add_new_classes is not None else not known
    tmp_root = ctx.settings.home / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    report = Report()
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="import-") as tmp:
        ctx.progress(0.01, "reading the source")
        entries = _stage(ctx, params, Path(tmp), report)
        image_entries, other = [], []
        for e in entries:
            suffix = PurePosixPath(e.name).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                image_entries.append(e)
            elif suffix in OTHER_IMAGE_SUFFIXES:
                report.reject(e.name, "unsupported_format", f"{suffix} images are not supported; use JPEG, PNG, "
                                                            "BMP or WebP")
            elif suffix in LABEL_SUFFIXES:
                other.append(e)
            else:
                report.ignore(e.name, "neither an image nor a label file")
        image_names = [e.name for e in image_entries]
        files = LabelFiles(other)
        reader = _choose_reader(params.format, dataset["task"], files, image_names)
        parsed = reader.read(files, image_names, known, report) if reader else Parsed(task=None)
        if parsed.task == "mixed":
            raise ImportRefused("the Label Studio file mixes class choices and rectangles; import one kind")
        if parsed.task and parsed.task != dataset["task"]:
            raise ImportRefused(f"the import holds {parsed.task} labels ({reader.NAME}); dataset "
                                f"{params.dataset_id!r} is a {dataset['task']} dataset")
        allowed = _usable_names(parsed.classes) if add_new else None
        ctx.progress(0.1, f"checking {len(image_entries)} images")
        staged = _check_images(ctx, params, image_entries, parsed, allowed, known, report)
        for name in sorted(set(files.entries) - files.used):
            report.ignore(name, "not a label file of the format used" if reader else "no label format in use")
        ctx.progress(0.85, f"storing {len(staged)} images")
        result = _commit(ctx, params, staged, known, parsed.classes, report, reader.NAME if reader else "none",
                         files=len(entries))
    return result


def _check_images(ctx: JobContext, params: ImportParams, entries: list[Entry], parsed: Parsed,
                  allowed: set[str] | None, known: list[str], report: Report) -> list[Staged]:
    with ctx.runtime.db.begin() as conn:
        in_dataset = dict(conn.execute(select(T.images.c.sha256, T.images.c.id)
                                       .where(T.images.c.dataset_id == params.dataset_id)).all())
    seen: dict[str, str] = {}
    staged: list[Staged] = []
    for n, entry in enumerate(sorted(entries, key=lambda e: e.name)):
        if n % 50 == 0:
            ctx.progress(0.1 + 0.75 * n / max(1, len(entries)), f"checked {n}/{len(entries)} images")
        try:
            checked = check_image(entry.path.read_bytes(), max_pixels=params.limits.max_image_pixels)
            if checked.sha256 in seen:
                raise FileProblem("duplicate", f"same content as {seen[checked.sha256]}")
            if checked.sha256 in in_dataset:
                raise FileProblem("duplicate", f"already in the dataset as image {in_dataset[checked.sha256]}")
            label = None
            if entry.name in parsed.labels:
                label = _resolve_label(parsed.labels[entry.name], checked.width, checked.height)
                _check_classes(label, allowed, known)
        except FileProblem as exc:
            report.reject(entry.name, exc.code, exc.message)
            continue
        seen[checked.sha256] = entry.name
        staged.append(Staged(entry.name, entry.path, checked.sha256, checked.ext, checked.width, checked.height,
                             embeddings.to_bytes(embeddings.embed(checked.image)), label))
    return staged


def _commit(ctx: JobContext, params: ImportParams, staged: list[Staged], known: list[str], declared: list[str],
            report: Report, fmt: str, files: int) -> dict[str, Any]:
    store, now, dataset_id = ctx.store, utcnow(), params.dataset_id
    keys = {}
    for s in staged:
        keys[s.sha256] = image_key(dataset_id, s.sha256, s.ext)
        store.put_if_absent(keys[s.sha256], s.path.read_bytes())
    used = {n for s in staged if s.label for n in ([s.label["class"]] if "class" in s.label
                                                    else [b[0] for b in s.label["boxes"]])}
    # New classes keep the order the label files declare them in (YOLO indices, COCO ids).
    new_classes = [n for n in dict.fromkeys(declared + sorted(used)) if n in used and n not in known]
    result = {"dataset_id": dataset_id, "format": fmt, "files": files, "imported": len(staged),
              "labelled": sum(1 for s in staged if s.label is not None), "new_classes": new_classes,
              "rejected": report.rejected, "ignored": report.ignored}
    with ctx.runtime.db.begin() as conn:
        for name in new_classes:
            conn.execute(T.classes.insert().values(dataset_id=dataset_id, name=name, created_at=now))
        ids = dict(conn.execute(select(T.classes.c.name, T.classes.c.id)
                                .where(T.classes.c.dataset_id == dataset_id)).all())
        for s in staged:
            image_id = uuid.uuid4().hex
            conn.execute(T.images.insert().values(id=image_id, dataset_id=dataset_id, sha256=s.sha256,
                                                  key=keys[s.sha256], width=s.width, height=s.height,
                                                  source_name=s.name, embedding=s.embedding,
                                                  import_job_id=ctx.job_id, created_at=now))
            if s.label is not None:
                if "class" in s.label:
                    value = {"class_id": ids[s.label["class"]]}
                else:
                    value = {"boxes": [{"class_id": ids[b[0]], "x1": b[1], "y1": b[2], "x2": b[3], "y2": b[4]}
                                       for b in s.label["boxes"]]}
                write_label(conn, dataset_id=dataset_id, image_id=image_id, user=params.user, action="import",
                            operation=ctx.job_id, after={"value": value, "source": "import",
                                                         "review_state": "unreviewed"})
        conn.execute(T.imports.insert().values(job_id=ctx.job_id, dataset_id=dataset_id, result=result,
                                               created_at=now))
    return result
