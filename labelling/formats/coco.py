"""COCO JSON (detection): `images`, `annotations` with pixel `bbox` [x, y, w, h], `categories`."""

from __future__ import annotations

import json

from labelling.archives import Report
from labelling.formats.common import BoxIn, LabelFiles, LabelIn, Matcher, Parsed, ReadImage, ZipOut, export_name
from tango.spec import DatasetManifest

NAME = "coco"
TASKS = ("detect",)


def _is_coco(doc: object) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("images"), list) and "annotations" in doc


def detect(files: LabelFiles, images: list[str]) -> bool:
    return any(_is_coco(files.json(n)) for n in files.names(".json"))


def read(files: LabelFiles, images: list[str], known_classes: list[str], report: Report) -> Parsed:
    parsed = Parsed(task="detect")
    matcher = Matcher(images)
    for name in files.names(".json"):
        doc = files.json(name)
        if not _is_coco(doc):
            continue
        files.used.add(name)
        try:
            categories = {int(c["id"]): str(c["name"]) for c in doc.get("categories", [])}
            by_image: dict[int, list[dict]] = {}
            for ann in doc.get("annotations") or []:
                by_image.setdefault(int(ann["image_id"]), []).append(ann)
            records = [(int(r["id"]), str(r["file_name"])) for r in doc["images"]]
        except (KeyError, TypeError, ValueError) as exc:
            report.reject(name, "invalid_label_file", f"not a valid COCO file: missing or bad field {exc}")
            continue
        for cname in categories.values():
            if cname not in parsed.classes:
                parsed.classes.append(cname)
        for image_id, file_name in records:
            image = matcher.find(file_name, near=name)
            if image is None:
                report.reject(file_name, "missing_image", f"{name} labels it, but the import has no such image")
                continue
            label = LabelIn(source=name, boxes=[])
            for ann in by_image.get(image_id, []):
                try:
                    x, y, w, h = (float(v) for v in ann["bbox"])
                    cat = int(ann["category_id"])
                except (KeyError, TypeError, ValueError):
                    label.problem = ("invalid_label", f"annotation {ann.get('id')} in {name} has no valid bbox "
                                                      "[x, y, w, h] and category_id")
                    break
                if cat not in categories:
                    label.problem = ("unknown_class", f"category_id {cat} of annotation {ann.get('id')} is not "
                                                      f"among the categories of {name}")
                    break
                label.boxes.append(BoxIn(categories[cat], x, y, x + w, y + h))
            parsed.labels[image] = label
    return parsed


def write(manifest: DatasetManifest, read_image: ReadImage, out: ZipOut) -> None:
    categories = [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(manifest.classes)]
    for split in ("train", "val", "test"):
        doc: dict = {"info": {"description": f"{manifest.dataset_id} {manifest.version}",
                              "version": manifest.version, "content_hash": manifest.content_hash},
                     "licenses": [], "images": [], "annotations": [], "categories": categories}
        items = sorted((i for i in manifest.items if i.split == split), key=lambda i: i.sha256)
        for image_id, item in enumerate(items, start=1):
            file_name = export_name(item.sha256, item.key)
            out.add(f"images/{split}/{file_name}", read_image(item.key))
            doc["images"].append({"id": image_id, "file_name": file_name, "width": item.width, "height": item.height})
            for box in item.boxes:
                w, h = box.x2 - box.x1, box.y2 - box.y1
                doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": image_id,
                                           "category_id": box.cls + 1, "bbox": [box.x1, box.y1, w, h],
                                           "area": w * h, "iscrowd": 0, "segmentation": []})
        out.add(f"annotations/instances_{split}.json", json.dumps(doc, indent=1).encode())
