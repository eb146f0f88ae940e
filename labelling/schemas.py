"""The labelling API's pydantic models, one pair per entity (XCreate in, XPublic out)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tango.spec import Task

DATASET_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
VERSION_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ReviewState = Literal["unreviewed", "approved", "rejected"]


def _class_name(value: str) -> str:
    value = value.strip()
    # Class names become folder names in exports.
    if not value or value in (".", "..") or any(c in value for c in "/\\") or any(ord(c) < 32 for c in value):
        raise ValueError("a class name must be 1..128 characters without '/', '\\' or control characters, "
                         "and not '.' or '..'")
    return value


class ClassCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)

    _check = field_validator("name")(_class_name)


class ClassPublic(BaseModel):
    id: int
    name: str
    index: int = Field(description="its class index in versions frozen now")
    count: int = Field(0, description="labels that use it")


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=DATASET_ID, description="also the dataset_id of its frozen versions")
    name: str = Field("", max_length=200)
    task: Task
    classes: list[str] = Field(default_factory=list, max_length=10_000)

    @field_validator("classes")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        names = [_class_name(v) for v in value]
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        return names


class DatasetCounts(BaseModel):
    images: int
    labelled: int
    unlabelled: int
    approved: int
    rejected: int
    open_suggestions: int


class DatasetPublic(BaseModel):
    id: str
    name: str
    task: Task
    classes: list[ClassPublic]
    counts: DatasetCounts
    created_at: datetime


class BoxIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    class_id: int | None = None
    class_name: str | None = None
    x1: float
    y1: float
    x2: float
    y2: float

    @model_validator(mode="after")
    def _one_class(self) -> BoxIn:
        if (self.class_id is None) == (self.class_name is None):
            raise ValueError("give a box exactly one of class_id or class_name")
        if not (self.x2 > self.x1 and self.y2 > self.y1):
            raise ValueError("a box needs x2 > x1 and y2 > y1")
        return self


class LabelCreate(BaseModel):
    """A classify label (class_id or class_name) or a detect label (boxes; [] = nothing to box)."""

    model_config = ConfigDict(extra="forbid")
    class_id: int | None = None
    class_name: str | None = None
    boxes: list[BoxIn] | None = Field(None, max_length=2000)
    expected_revision: int | None = Field(None, description="refuse (409) if the label changed meanwhile")


class BoxPublic(BaseModel):
    class_id: int
    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float | None = None


class LabelPublic(BaseModel):
    class_id: int | None = None
    class_name: str | None = None
    boxes: list[BoxPublic] | None = None
    source: str
    revision: int
    updated_by: str
    updated_at: datetime
    review_state: ReviewState
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None


class SuggestionPublic(BaseModel):
    id: str
    image_id: str
    model_id: str
    job_id: str
    class_id: int | None = None
    class_name: str | None = None
    boxes: list[BoxPublic] | None = None
    score: float
    state: str
    created_at: datetime


class SuggestionPage(BaseModel):
    items: list[SuggestionPublic]
    total: int


class ImagePublic(BaseModel):
    id: str
    dataset_id: str
    sha256: str
    width: int
    height: int
    source_name: str
    content_url: str
    label: LabelPublic | None
    suggestions: list[SuggestionPublic] = Field(default_factory=list)
    created_at: datetime


class ImagePage(BaseModel):
    items: list[ImagePublic]
    total: int


class ReviewCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: ReviewState


class BulkCreate(BaseModel):
    """One operation over many images, undone as one."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["set_class", "clear", "review", "accept_suggestions"]
    image_ids: list[str] = Field(min_length=1, max_length=5000)
    class_id: int | None = None
    class_name: str | None = None
    review_state: ReviewState | None = None
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="accept_suggestions: only at least this sure")


class BulkResult(BaseModel):
    operation: str
    changed: int
    skipped: list[dict]


class NextPublic(BaseModel):
    image: ImagePublic | None
    source: Literal["queue", "pool"]
    remaining: int = Field(description="unlabelled images left in that source")


class HistoryPublic(BaseModel):
    id: int
    image_id: str
    operation: str
    action: str
    before: dict | None
    after: dict | None
    user: str
    at: datetime
    undone: bool


class UndoPublic(BaseModel):
    operation: str | None
    action: str | None
    reverted: int
    images: list[str]


class VersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(None, pattern=VERSION_ID, description="default: v<n+1>")
    seed: int = Field(0, description="seeds the split; same labels + seed = same split and hash")
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, ge=0.0, lt=1.0)
    include: Literal["labelled", "approved"] = Field("labelled", description="'labelled' leaves out rejected")

    @model_validator(mode="after")
    def _room_for_train(self) -> VersionCreate:
        if self.val + self.test >= 0.9:
            raise ValueError("val + test must leave at least 10 % for train")
        return self


class VersionPublic(BaseModel):
    dataset_id: str
    version: str
    content_hash: str
    manifest_url: str
    counts: dict
    params: dict
    created_by: str
    created_at: datetime


class QueueItem(BaseModel):
    image_id: str
    rank: int
    score: float | None
    labelled: bool


class QueuePublic(BaseModel):
    job_id: str | None
    strategy: str | None
    items: list[QueueItem]
