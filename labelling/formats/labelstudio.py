"""Label Studio JSON export (a list of tasks): `data.image` names the image; the task's latest
completed annotation gives `choices` (classify) or `rectanglelabels` in percent (detect)."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from labelling.archives import Report
from labelling.formats.common import BoxIn, LabelFiles, LabelIn, Matcher, Parsed

NAME = "labelstudio"
TASKS = ("classify", "detect")


def _is_ls(doc: object) -> bool:
    return isinstance(doc, list) and bool(doc) and all(isinstance(t, dict) and "data" in t for t in doc)


def detect(files: LabelFiles, images: list[str]) -> bool:
    return any(_is_ls(files.json(n)) for n in files.names(".json"))


def _image_ref(task: dict) -> str:
    data = task.get("data") or {}
    ref = data.get("image") or next((v for v in data.values() if isinstance(v, str)), "")
    path = urlparse(ref).path if "://" in ref else ref
    # /data/upload/3/abcd1234-cat.jpg, /data/local-files/?d=folder/cat.jpg
    if "?d=" in ref:
        path = ref.split("?d=", 1)[1]
    return unquote(path)


def _annotation(task: dict) -> list[dict] | None:
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled") and a.get("result") is not None]
    return done[-1]["result"] if done else None


def _label(result: list[dict], source: str) -> LabelIn:
    label = LabelIn(source=source)
    for region in result:
        value, kind = region.get("value") or {}, region.get("type")
        if kind == "choices" and value.get("choices"):
            label.class_name = str(value["choices"][0])
        elif kind == "rectanglelabels":
            if abs(float(value.get("rotation") or 0.0)) > 1e-6:
                label.problem = ("invalid_label", f"{source}: rotated rectangles are not supported")
                return label
            try:
                x, y, w, h = (float(value[k]) / 100.0 for k in ("x", "y", "width", "height"))
                cls = str(value["rectanglelabels"][0])
            except (KeyError, IndexError, TypeError, ValueError):
                label.problem = ("invalid_label", f"{source}: a rectangle lacks x/y/width/height or its label")
                return label
            label.boxes = (label.boxes or []) + [BoxIn(cls, x, y, x + w, y + h, normalized=True)]
    if label.boxes is not None:
        label.class_name = None
    return label


def read(files: LabelFiles, images: list[str], known_classes: list[str], report: Report) -> Parsed:
    parsed = Parsed(task=None)
    matcher = Matcher(images)
    for name in files.names(".json"):
        doc = files.json(name)
        if not _is_ls(doc):
            continue
        files.used.add(name)
        for task in doc:
            ref = _image_ref(task)
            image = matcher.find(ref) if ref else None
            if image is None:
                report.reject(ref or f"{name}#task {task.get('id')}", "missing_image",
                              f"{name} labels it, but the import has no such image")
                continue
            result = _annotation(task)
            if result is None:
                continue  # a task nobody completed: the image stays unlabelled
            label = _label(result, name)
            if label.boxes is not None or label.class_name is not None or label.problem:
                parsed.labels[image] = label
            for cls in [label.class_name] + [b.cls for b in label.boxes or []]:
                if cls and cls not in parsed.classes:
                    parsed.classes.append(cls)
    kinds = {"detect" if l.boxes is not None else "classify" for l in parsed.labels.values() if not l.problem}
    if len(kinds) == 1:
        parsed.task = kinds.pop()
    elif kinds:
        parsed.task = "mixed"
    return parsed
