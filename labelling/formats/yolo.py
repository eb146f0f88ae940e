"""YOLO txt (detection), Ultralytics layout: `images/<...>/x.jpg` with `labels/<...>/x.txt` (or the
txt beside the image), one `cls cx cy w h` line per box, normalised; polygon lines
(`cls x1 y1 x2 y2 ...`) become their bounding box. Class names from data.yaml (`names`),
classes.txt, obj.names or Label Studio's notes.json; without any, the dataset's classes in order."""

from __future__ import annotations

from pathlib import PurePosixPath

import yaml

from labelling.archives import ImportRefused, Report
from labelling.formats.common import BoxIn, LabelFiles, LabelIn, Parsed, ReadImage, ZipOut, export_name
from tango.spec import DatasetManifest

NAME = "yolo"
TASKS = ("detect",)
NAME_FILES = ("classes.txt", "obj.names")


def label_path(image: str) -> str:
    """Ultralytics' rule: the last /images/ becomes /labels/, the suffix becomes .txt."""
    path = "/" + image
    if "/images/" in path:
        head, tail = path.rsplit("/images/", 1)
        path = f"{head}/labels/{tail}"
    return str(PurePosixPath(path).with_suffix(".txt"))[1:]


def _label_files(files: LabelFiles, images: list[str]) -> dict[str, str]:
    txt = set(files.names(".txt"))
    found = {}
    for image in images:
        for candidate in (label_path(image), str(PurePosixPath(image).with_suffix(".txt"))):
            if candidate in txt and PurePosixPath(candidate).name not in NAME_FILES:
                found[image] = candidate
                break
    return found


def detect(files: LabelFiles, images: list[str]) -> bool:
    return bool(_label_files(files, images))


def _names(files: LabelFiles, known_classes: list[str]) -> list[str] | None:
    for name in files.names(".yaml", ".yml"):
        try:
            doc = yaml.safe_load(files.text(name))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(doc, dict) and "names" in doc:
            files.used.add(name)
            names = doc["names"]
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names, key=int)]
            return [str(n) for n in names]
    for name in files.names(".txt", ".names"):
        if PurePosixPath(name).name in NAME_FILES:
            files.used.add(name)
            return [line.strip() for line in files.text(name).splitlines() if line.strip()]
    for name in files.names(".json"):
        doc = files.json(name)
        if PurePosixPath(name).name == "notes.json" and isinstance(doc, dict) and "categories" in doc:
            files.used.add(name)
            return [str(c["name"]) for c in sorted(doc["categories"], key=lambda c: int(c["id"]))]
    return list(known_classes) or None


def _parse_line(line: str, names: list[str]) -> BoxIn:
    parts = line.split()
    try:
        cls, values = int(parts[0]), [float(v) for v in parts[1:]]
    except (ValueError, IndexError):
        raise ValueError(f"'{line}' is not 'class cx cy w h'") from None
    if len(values) == 4:
        cx, cy, w, h = values
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    elif len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    else:
        raise ValueError(f"'{line}' is neither 'class cx cy w h' nor a polygon")
    if not 0 <= cls < len(names):
        raise LookupError(f"class index {cls} is outside the {len(names)} class names")
    return BoxIn(names[cls], x1, y1, x2, y2, normalized=True)


def read(files: LabelFiles, images: list[str], known_classes: list[str], report: Report) -> Parsed:
    pairs = _label_files(files, images)
    names = _names(files, known_classes)
    if names is None:
        raise ImportRefused("YOLO labels need class names: add a data.yaml with 'names', a classes.txt, "
                            "or create the dataset's classes first")
    parsed = Parsed(task="detect", classes=list(names))
    for image, txt in pairs.items():
        files.used.add(txt)
        label = LabelIn(source=txt, boxes=[])
        try:
            lines = files.text(txt).splitlines()
        except UnicodeDecodeError:
            label.problem = ("invalid_label", f"{txt} is not UTF-8 text")
            lines = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                label.boxes.append(_parse_line(line.strip(), names))
            except LookupError as exc:
                label.problem = ("unknown_class", f"{txt} line {number}: {exc}")
                break
            except ValueError as exc:
                label.problem = ("invalid_label", f"{txt} line {number}: {exc}")
                break
        parsed.labels[image] = label
    return parsed


def write(manifest: DatasetManifest, read_image: ReadImage, out: ZipOut) -> None:
    names = {i: n for i, n in enumerate(manifest.classes)}
    data = {"train": "images/train", "val": "images/val", "test": "images/test", "nc": len(names), "names": names}
    out.add("data.yaml", yaml.safe_dump(data, sort_keys=False).encode())
    for item in sorted(manifest.items, key=lambda i: (i.split, i.sha256)):
        file_name = export_name(item.sha256, item.key)
        out.add(f"images/{item.split}/{file_name}", read_image(item.key))
        lines = [f"{b.cls} {(b.x1 + b.x2) / 2 / item.width:.6f} {(b.y1 + b.y2) / 2 / item.height:.6f} "
                 f"{(b.x2 - b.x1) / item.width:.6f} {(b.y2 - b.y1) / item.height:.6f}" for b in item.boxes]
        out.add(f"labels/{item.split}/{PurePosixPath(file_name).stem}.txt", "".join(l + "\n" for l in lines).encode())

