"""Class folders (classify): an image's class is the name of the folder it is in, as in
`<class>/x.jpg` or `<split>/<class>/x.jpg`. Exported as `<split>/<class>/x.jpg`, the layout of
torchvision's ImageFolder and Ultralytics' classification datasets."""

from __future__ import annotations

from pathlib import PurePosixPath

from labelling.archives import Report
from labelling.formats.common import LabelFiles, LabelIn, Parsed, ReadImage, ZipOut, export_name
from tango.spec import DatasetManifest

NAME = "folders"
TASKS = ("classify",)


def _common_root(images: list[str]) -> int:
    """How many leading folders every image shares (a zip of one top folder)."""
    parts = [PurePosixPath(n).parts[:-1] for n in images]
    depth = 0
    while parts and all(len(p) > depth + 1 for p in parts) and len({p[depth] for p in parts}) == 1:
        depth += 1
    return depth


def detect(files: LabelFiles, images: list[str]) -> bool:
    root = _common_root(images)
    return bool(images) and all(len(PurePosixPath(n).parts) - root >= 2 for n in images)


def read(files: LabelFiles, images: list[str], known_classes: list[str], report: Report) -> Parsed:
    parsed = Parsed(task="classify")
    root = _common_root(images)
    for image in images:
        parts = PurePosixPath(image).parts
        if len(parts) - root < 2:
            continue  # at the top: no folder, no class
        cls = parts[-2]
        parsed.labels[image] = LabelIn(source=str(PurePosixPath(image).parent), class_name=cls)
        if cls not in parsed.classes:
            parsed.classes.append(cls)
    parsed.classes.sort()
    return parsed


def write(manifest: DatasetManifest, read_image: ReadImage, out: ZipOut) -> None:
    for item in sorted(manifest.items, key=lambda i: (i.split, i.label, i.sha256)):
        out.add(f"{item.split}/{manifest.classes[item.label]}/{export_name(item.sha256, item.key)}",
                read_image(item.key))
