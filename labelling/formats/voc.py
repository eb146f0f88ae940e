"""Pascal VOC XML (detection): one `<annotation>` per image with `<filename>`, `<size>` and
`<object><name/><bndbox><xmin/>...</bndbox></object>`; exported as the VOC folder layout
(JPEGImages/, Annotations/, ImageSets/Main/<split>.txt) that VOC readers expect below VOC<year>/."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import PurePosixPath

from labelling.archives import Report
from labelling.formats.common import BoxIn, LabelFiles, LabelIn, Matcher, Parsed, ReadImage, ZipOut, export_name
from tango.spec import DatasetManifest

NAME = "voc"
TASKS = ("detect",)


def _root(files: LabelFiles, name: str) -> ET.Element | None:
    data = files.bytes(name)
    # The standard library parser expands internal entities; a DOCTYPE has no place in VOC files,
    # so refusing it shuts out entity-expansion bombs without another dependency.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ValueError("XML with a DOCTYPE or ENTITY declaration is refused")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML ({exc})") from None


def detect(files: LabelFiles, images: list[str]) -> bool:
    # A byte sniff, not a parse: a VOC file that is refused (e.g. for a DOCTYPE) is still VOC, and
    # read() reports why it was refused.
    return any(b"<annotation" in files.bytes(n)[:4096] for n in files.names(".xml"))


def _image_for(name: str, root: ET.Element, matcher: Matcher) -> str | None:
    filename = (root.findtext("filename") or "").strip()
    if filename:
        found = matcher.find(filename, near=name)
        if found:
            return found
    stem = PurePosixPath(name).stem
    for base in {str(PurePosixPath(name).parent), str(PurePosixPath(name).parent.parent / "JPEGImages")}:
        for ext in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
            found = matcher.find(f"{base}/{stem}{ext}".lstrip("./"))
            if found:
                return found
    return None


def read(files: LabelFiles, images: list[str], known_classes: list[str], report: Report) -> Parsed:
    parsed = Parsed(task="detect")
    matcher = Matcher(images)
    for name in files.names(".xml"):
        try:
            root = _root(files, name)
        except ValueError as exc:
            report.reject(name, "invalid_label_file", str(exc))
            continue
        if root.tag != "annotation":
            continue
        files.used.add(name)
        image = _image_for(name, root, matcher)
        if image is None:
            report.reject(name, "missing_image", f"labels '{root.findtext('filename')}', which the import lacks")
            continue
        label = LabelIn(source=name, boxes=[])
        for obj in root.iter("object"):
            cls, bb = (obj.findtext("name") or "").strip(), obj.find("bndbox")
            try:
                coords = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError):
                label.problem = ("invalid_label", f"{name}: an object has no numeric bndbox xmin/ymin/xmax/ymax")
                break
            if not cls:
                label.problem = ("invalid_label", f"{name}: an object has no <name>")
                break
            label.boxes.append(BoxIn(cls, *coords))
            if cls not in parsed.classes:
                parsed.classes.append(cls)
        parsed.labels[image] = label
    return parsed


def _xml(item, file_name: str, classes: list[str]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", item.width), ("height", item.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for box in item.boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = classes[box.cls]
        for tag, value in (("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
            ET.SubElement(obj, tag).text = value
        bb = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", box.x1), ("ymin", box.y1), ("xmax", box.x2), ("ymax", box.y2)):
            ET.SubElement(bb, tag).text = f"{value:g}"
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=False)


def write(manifest: DatasetManifest, read_image: ReadImage, out: ZipOut) -> None:
    sets: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for item in sorted(manifest.items, key=lambda i: i.sha256):
        file_name = export_name(item.sha256, item.key)
        stem = PurePosixPath(file_name).stem
        out.add(f"JPEGImages/{file_name}", read_image(item.key))
        out.add(f"Annotations/{stem}.xml", _xml(item, file_name, manifest.classes))
        sets[item.split].append(stem)
    sets["trainval"] = sorted(sets["train"] + sets["val"])
    for split, stems in sets.items():
        out.add(f"ImageSets/Main/{split}.txt", "".join(s + "\n" for s in stems).encode())
    out.add("labelmap.txt", "".join(f"{c}\n" for c in manifest.classes).encode())
