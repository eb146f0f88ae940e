"""labelling's own tables: datasets, classes, images, labels and their history, model suggestions,
active-learning selections, import outcomes and frozen versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)


class Tables(NamedTuple):
    datasets: Table
    classes: Table
    images: Table
    labels: Table
    history: Table
    suggestions: Table
    selections: Table
    imports: Table
    versions: Table


def _ts(name: str, nullable: bool = False) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable)


def define_tables(metadata: MetaData) -> Tables:
    datasets = Table(
        "labelling_datasets", metadata,
        Column("id", String(64), primary_key=True),  # the id autonn trains on, with a version
        Column("name", Text, nullable=False, default=""),
        Column("task", String(16), nullable=False),
        _ts("created_at"), _ts("updated_at"),
    )
    classes = Table(
        "labelling_classes", metadata,
        # A stable id: labels point at it, so renaming a class never touches a label, and the
        # index a frozen version gives a class is its position among the dataset's classes.
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("dataset_id", String(64), ForeignKey("labelling_datasets.id", ondelete="CASCADE"),
               nullable=False, index=True),
        Column("name", String(128), nullable=False),
        _ts("created_at"),
        UniqueConstraint("dataset_id", "name", name="uq_labelling_classes_dataset_name"),
    )
    images = Table(
        "labelling_images", metadata,
        Column("id", String(32), primary_key=True),
        Column("dataset_id", String(64), ForeignKey("labelling_datasets.id", ondelete="CASCADE"),
               nullable=False, index=True),
        Column("sha256", String(64), nullable=False),
        Column("key", Text, nullable=False),
        Column("width", Integer, nullable=False),
        Column("height", Integer, nullable=False),
        Column("source_name", Text, nullable=False, default=""),
        # Cheap features computed while the image is decoded at import (see embeddings.py), so a
        # cold-start selection never decodes the pool again.
        Column("embedding", LargeBinary, nullable=True),
        Column("import_job_id", String(32), nullable=True),
        _ts("created_at"),
        UniqueConstraint("dataset_id", "sha256", name="uq_labelling_images_dataset_sha"),
    )
    labels = Table(
        "labelling_labels", metadata,
        Column("image_id", String(32), ForeignKey("labelling_images.id", ondelete="CASCADE"),
               primary_key=True),
        Column("dataset_id", String(64), nullable=False, index=True),
        Column("value", JSON, nullable=False),  # {"class_id": n} or {"boxes": [{class_id, x1, y1, x2, y2}]}
        Column("source", String(32), nullable=False),  # human | import | suggestion
        Column("revision", Integer, nullable=False),
        Column("updated_by", String(128), nullable=False),
        _ts("updated_at"),
        Column("review_state", String(16), nullable=False, default="unreviewed"),
        Column("reviewed_by", String(128), nullable=True),
        _ts("reviewed_at", nullable=True),
    )
    history = Table(
        "labelling_label_history", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("dataset_id", String(64), nullable=False, index=True),
        Column("image_id", String(32), nullable=False, index=True),
        # Entries written by one request share an operation id: undo reverts a bulk edit whole.
        Column("operation", String(32), nullable=False, index=True),
        Column("action", String(32), nullable=False),
        Column("before", JSON, nullable=True),
        Column("after", JSON, nullable=True),
        Column("user", String(128), nullable=False),
        _ts("at"),
        Column("undone", Boolean, nullable=False, default=False),
    )
    suggestions = Table(
        "labelling_suggestions", metadata,
        Column("id", String(32), primary_key=True),
        Column("dataset_id", String(64), nullable=False, index=True),
        Column("image_id", String(32), ForeignKey("labelling_images.id", ondelete="CASCADE"),
               nullable=False, index=True),
        Column("model_id", String(64), nullable=False),
        Column("job_id", String(32), nullable=False, index=True),
        Column("value", JSON, nullable=False),  # like a label, with a score per box / class
        Column("score", Float, nullable=False),
        Column("state", String(16), nullable=False, index=True),  # open | accepted | rejected | superseded
        _ts("created_at"),
        Column("decided_by", String(128), nullable=True),
        _ts("decided_at", nullable=True),
    )
    selections = Table(
        "labelling_selections", metadata,
        Column("job_id", String(32), primary_key=True),
        Column("image_id", String(32), primary_key=True),
        Column("dataset_id", String(64), nullable=False, index=True),
        Column("rank", Integer, nullable=False),
        Column("score", Float, nullable=True),
        Column("strategy", String(32), nullable=False),
        _ts("created_at"),
    )
    imports = Table(
        "labelling_imports", metadata,
        # Written in the same transaction as the imported rows: a redelivered import job finds
        # it and returns the recorded outcome instead of importing twice.
        Column("job_id", String(32), primary_key=True),
        Column("dataset_id", String(64), nullable=False, index=True),
        Column("result", JSON, nullable=False),
        _ts("created_at"),
    )
    versions = Table(
        "labelling_versions", metadata,
        Column("dataset_id", String(64), ForeignKey("labelling_datasets.id", ondelete="CASCADE"),
               primary_key=True),
        Column("version", String(64), primary_key=True),
        Column("content_hash", String(64), nullable=False),
        Column("manifest_key", Text, nullable=False),
        Column("counts", JSON, nullable=False),
        Column("params", JSON, nullable=False),
        Column("created_by", String(128), nullable=False),
        _ts("created_at"),
    )
    return Tables(datasets, classes, images, labels, history, suggestions, selections, imports, versions)


metadata = MetaData()
T = define_tables(metadata)


def aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def row_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = aware(value)
    return data
