"""Label formats by name: readers (import) and writers (export) of COCO JSON, YOLO txt, Pascal VOC
XML, Label Studio JSON and class folders. Each format module has `NAME`, `TASKS` and, as it
supports them, `detect(files)` + `read(files, images, known_classes, report)` and
`write(manifest, read_image, out)`."""

from __future__ import annotations

from labelling.formats import coco, folders, labelstudio, voc, yolo
from labelling.formats.common import BoxIn, LabelFiles, LabelIn, Parsed

# Tried in this order when an import says format "auto": the first whose files are present wins.
READERS = {m.NAME: m for m in (coco, labelstudio, voc, yolo, folders)}
WRITERS = {m.NAME: m for m in (coco, yolo, voc, folders)}

__all__ = ["READERS", "WRITERS", "BoxIn", "LabelFiles", "LabelIn", "Parsed"]
