"""Importing each label format (COCO, YOLO, VOC, Label Studio, class folders) gives the exact
labels; exporting a frozen version in each format reads back through a real third-party reader
(pycocotools, Ultralytics' dataset loader, torchvision's VOCDetection and ImageFolder), and an
export re-imported freezes to the very same content hash."""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest

from labelling.exporter import export_key
from labelling.formats import WRITERS
from labelling.formats.common import ZipOut
from tango.datasets import load_version
from tango.sampledata import SHAPE_CLASSES, make_shapes, write_yolo_dataset
from tests.factories import image_bytes, zip_bytes
from tests.labelling.conftest import make_dataset, start, upload

SAMPLES = make_shapes(8, size=64, seed=3)


def _labels_by_name(client, dataset_id: str) -> dict[str, list[tuple]]:
    items = client.get(f"/datasets/{dataset_id}/images", params={"limit": 500}).json()["items"]
    out = {}
    for item in items:
        label = item["label"]
        if label is None:
            out[item["source_name"]] = None
        elif label["boxes"] is not None:
            out[item["source_name"]] = sorted((b["class_name"], b["x1"], b["y1"], b["x2"], b["y2"])
                                              for b in label["boxes"])
        else:
            out[item["source_name"]] = label["class_name"]
    return out


def _expected(name_of) -> dict:  # noqa: ANN001
    return {name_of(i): sorted((SHAPE_CLASSES[int(b[0])], *map(float, b[1:])) for b in boxes)
            for i, (_, boxes) in enumerate(SAMPLES)}


def _close(got: dict, want: dict, tol: float) -> None:
    assert got.keys() == want.keys()
    for name, boxes in want.items():
        assert len(got[name]) == len(boxes), name
        for g, w in zip(got[name], boxes, strict=True):
            assert g[0] == w[0] and np.allclose(g[1:], w[1:], atol=tol), (name, g, w)


def test_import_coco(client):
    make_dataset(client, "ds", "detect")
    doc = {"images": [], "annotations": [],
           "categories": [{"id": i + 7, "name": n} for i, n in enumerate(SHAPE_CLASSES)]}
    files = {}
    for i, (image, boxes) in enumerate(SAMPLES):
        files[f"train/{i}.png"] = image_bytes(image)
        doc["images"].append({"id": 100 + i, "file_name": f"{i}.png", "width": 64, "height": 64})
        for c, x1, y1, x2, y2 in boxes:
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": 100 + i,
                                       "category_id": int(c) + 7, "bbox": [float(x1), float(y1), float(x2 - x1),
                                                                           float(y2 - y1)]})
    files["annotations/instances_train.json"] = json.dumps(doc).encode()
    result = upload(client, "ds", zip_bytes(files))["result"]
    assert result["format"] == "coco" and result["imported"] == result["labelled"] == 8 and not result["rejected"]
    assert result["new_classes"] == list(SHAPE_CLASSES)
    _close(_labels_by_name(client, "ds"), _expected(lambda i: f"train/{i}.png"), 1e-6)


def test_import_yolo_folder_written_for_ultralytics(client, tmp_path):
    make_dataset(client, "ds", "detect")
    write_yolo_dataset(SAMPLES, tmp_path / "yolo", SHAPE_CLASSES)
    job = start(client, "import", dataset_id="ds", source={"path": str(tmp_path / "yolo")})
    result = job["result"]
    assert result["format"] == "yolo" and result["labelled"] == 8 and not result["rejected"], result
    # YOLO keeps 6 decimals of a fraction of 64 px.
    _close(_labels_by_name(client, "ds"), _expected(lambda i: f"images/train/{i:06d}.png"), 1e-3)


def _voc_xml(name: str, boxes) -> bytes:  # noqa: ANN001
    objects = "".join(f"<object><name>{SHAPE_CLASSES[int(c)]}</name><difficult>0</difficult><bndbox>"
                      f"<xmin>{x1:g}</xmin><ymin>{y1:g}</ymin><xmax>{x2:g}</xmax><ymax>{y2:g}</ymax></bndbox></object>"
                      for c, x1, y1, x2, y2 in boxes)
    return (f"<annotation><folder>JPEGImages</folder><filename>{name}</filename><size><width>64</width>"
            f"<height>64</height><depth>3</depth></size>{objects}</annotation>").encode()


def test_import_voc(client):
    make_dataset(client, "ds", "detect", SHAPE_CLASSES)
    files = {}
    for i, (image, boxes) in enumerate(SAMPLES):
        files[f"VOC/JPEGImages/{i:04d}.png"] = image_bytes(image)
        files[f"VOC/Annotations/{i:04d}.xml"] = _voc_xml(f"{i:04d}.png", boxes)
    result = upload(client, "ds", zip_bytes(files))["result"]
    assert result["format"] == "voc" and result["labelled"] == 8 and not result["rejected"], result
    _close(_labels_by_name(client, "ds"), _expected(lambda i: f"VOC/JPEGImages/{i:04d}.png"), 1e-6)


def test_import_label_studio_rectangles_and_choices(client):
    make_dataset(client, "det", "detect")
    tasks = []
    for i, (image, boxes) in enumerate(SAMPLES):
        result = [{"type": "rectanglelabels", "original_width": 64, "original_height": 64,
                   "value": {"x": x1 / 64 * 100, "y": y1 / 64 * 100, "width": (x2 - x1) / 64 * 100,
                             "height": (y2 - y1) / 64 * 100, "rotation": 0,
                             "rectanglelabels": [SHAPE_CLASSES[int(c)]]}} for c, x1, y1, x2, y2 in boxes.tolist()]
        tasks.append({"id": i, "data": {"image": f"/data/upload/3/abcd{i:04d}-shot{i}.png"},
                      "annotations": [{"was_cancelled": False, "result": result}]})
    files = {f"shot{i}.png": image_bytes(im) for i, (im, _) in enumerate(SAMPLES)}
    files["export.json"] = json.dumps(tasks).encode()
    result = upload(client, "det", zip_bytes(files))["result"]
    assert result["format"] == "labelstudio" and result["labelled"] == 8 and not result["rejected"], result
    _close(_labels_by_name(client, "det"), _expected(lambda i: f"shot{i}.png"), 1e-4)

    make_dataset(client, "cls", "classify")
    tasks = [{"id": i, "data": {"image": f"s3://bucket/shot{i}.png"},
              "annotations": [{"result": [{"type": "choices", "value": {"choices": ["odd" if i % 2 else "even"]}}]}]}
             for i in range(6)] + [{"id": 99, "data": {"image": "shot6.png"}, "annotations": []}]
    files = {f"shot{i}.png": image_bytes(im) for i, (im, _) in enumerate(SAMPLES[:7])}
    files["tasks.json"] = json.dumps(tasks).encode()
    result = upload(client, "cls", zip_bytes(files))["result"]
    assert result["imported"] == 7 and result["labelled"] == 6
    labels = _labels_by_name(client, "cls")
    assert labels["shot3.png"] == "odd" and labels["shot4.png"] == "even" and labels["shot6.png"] is None


def test_import_class_folders_and_unlabelled_images(client):
    make_dataset(client, "cls", "classify")
    files = {f"photos/{'cat' if i < 4 else 'dog'}/{i}.jpg": image_bytes(im, "JPEG")
             for i, (im, _) in enumerate(SAMPLES)}
    result = upload(client, "cls", zip_bytes(files))["result"]
    assert result["format"] == "folders" and result["labelled"] == 8 and result["new_classes"] == ["cat", "dog"]
    assert _labels_by_name(client, "cls")["photos/dog/5.jpg"] == "dog"

    make_dataset(client, "raw", "classify", ["cat"])
    result = upload(client, "raw", zip_bytes({"a/x.png": image_bytes(SAMPLES[0][0])}), format="none")["result"]
    assert result["format"] == "none" and result["imported"] == 1 and result["labelled"] == 0


def test_import_from_a_store_prefix(client):
    make_dataset(client, "ds", "detect", SHAPE_CLASSES)
    store = client.runtime.store
    for i, (image, _) in enumerate(SAMPLES[:3]):
        store.put_bytes(f"incoming/batch-1/img{i}.png", image_bytes(image))
    job = start(client, "import", dataset_id="ds", source={"store_url": store.url_for("incoming/batch-1")})
    assert job["result"]["imported"] == 3
    resp = client.post("/jobs", json={"kind": "import", "params": {
        "dataset_id": "ds", "source": {"store_url": "file:///elsewhere/x.zip"}}})
    assert resp.status_code == 422 and "not inside the store" in resp.json()["detail"]


# --- export round trips ----------------------------------------------------------------------------

def _detect_dataset(client, dataset_id: str) -> dict:
    """Shapes as JPEG (VOC readers expect JPEGImages/*.jpg), imported via COCO, frozen as v1."""
    samples = make_shapes(12, size=64, seed=5)
    doc = {"images": [], "annotations": [],
           "categories": [{"id": i + 1, "name": n} for i, n in enumerate(SHAPE_CLASSES)]}
    files = {}
    for i, (image, boxes) in enumerate(samples):
        files[f"{i}.jpg"] = image_bytes(image, "JPEG")
        doc["images"].append({"id": i + 1, "file_name": f"{i}.jpg", "width": 64, "height": 64})
        for c, x1, y1, x2, y2 in boxes:
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                                       "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]})
    files["annotations.json"] = json.dumps(doc).encode()
    make_dataset(client, dataset_id, "detect", SHAPE_CLASSES)
    assert upload(client, dataset_id, zip_bytes(files))["result"]["labelled"] == 12
    resp = client.post(f"/datasets/{dataset_id}/versions", json={"version": "v1", "seed": 4, "val": 0.25, "test": 0.25})
    assert resp.status_code == 201, resp.text
    return resp.json()


def _export(client, dataset_id: str, fmt: str, tmp_path: Path) -> Path:
    resp = client.post(f"/datasets/{dataset_id}/versions/v1/exports/{fmt}")
    assert resp.status_code == 202, resp.text
    job = start_existing(client, resp.json())
    assert job["state"] == "succeeded", job["error"]
    download = client.get(job["result"]["download"])
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    out = tmp_path / fmt
    zipfile.ZipFile(io.BytesIO(download.content)).extractall(out)
    return out


def start_existing(client, job: dict) -> dict:
    from tests.labelling.conftest import run_job

    return run_job(client, job)


def _manifest_boxes(client, dataset_id: str, split: str) -> dict[str, list[tuple]]:
    manifest = load_version(client.runtime.store, dataset_id, "v1")
    return {i.sha256[:16]: sorted((b.cls, b.x1, b.y1, b.x2, b.y2) for b in i.boxes)
            for i in manifest.items if i.split == split}


def _reimport_hash(client, fmt: str, folder: Path, dataset_id: str, task: str = "detect",
                   classes=SHAPE_CLASSES) -> str:  # noqa: ANN001
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.endswith(".cache"):
                zf.write(path, path.relative_to(folder).as_posix())
    make_dataset(client, f"{dataset_id}-again", task, classes)
    job = upload(client, f"{dataset_id}-again", data.getvalue(), format=fmt)
    assert not job["result"]["rejected"], job["result"]["rejected"]
    resp = client.post(f"/datasets/{dataset_id}-again/versions", json={"version": "v1", "seed": 4, "val": 0.25,
                                                                       "test": 0.25})
    return resp.json()["content_hash"]


def test_coco_export_reads_back_with_pycocotools(client, tmp_path):
    from pycocotools.coco import COCO

    version = _detect_dataset(client, "ds")
    out = _export(client, "ds", "coco", tmp_path)
    for split in ("train", "val", "test"):
        coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
        assert list(names.values()) == list(SHAPE_CLASSES)
        got = {}
        for img in coco.loadImgs(coco.getImgIds()):
            assert (out / "images" / split / img["file_name"]).is_file()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            got[img["file_name"][:16]] = sorted((a["category_id"] - 1, a["bbox"][0], a["bbox"][1],
                                                 a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3])
                                                for a in anns)
        assert got == _manifest_boxes(client, "ds", split)
    assert _reimport_hash(client, "coco", out, "ds") == version["content_hash"]


def test_yolo_export_reads_back_with_ultralytics(client, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_AUTOINSTALL", "0")
    monkeypatch.setenv("YOLO_CONFIG_DIR", os.environ.get("YOLO_CONFIG_DIR") or str(tmp_path / "yolo-config"))
    _detect_dataset(client, "ds")
    out = _export(client, "ds", "yolo", tmp_path)
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(out / "data.yaml"))
    assert data["names"] == dict(enumerate(SHAPE_CLASSES))
    for split in ("train", "val", "test"):
        ds = YOLODataset(img_path=data[split], data=data, task="detect", imgsz=64, augment=False)
        got = {}
        for label in ds.labels:
            h, w = label["shape"]
            boxes = [(int(c), (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
                     for c, (cx, cy, bw, bh) in zip(label["cls"].ravel(), label["bboxes"], strict=True)]
            got[Path(label["im_file"]).name[:16]] = sorted(boxes)
        want = _manifest_boxes(client, "ds", split)
        assert got.keys() == want.keys()
        for key, boxes in want.items():
            assert [b[0] for b in got[key]] == [b[0] for b in boxes]
            assert np.allclose([b[1:] for b in got[key]], [b[1:] for b in boxes], atol=1e-3)
    # YOLO keeps 6 decimals of a fraction, so the re-import matches to a thousandth of a pixel,
    # not bit for bit: same images, splits and classes, boxes within 1e-3.
    _reimport_hash(client, "yolo", out, "ds")
    first, again = (load_version(client.runtime.store, d, "v1") for d in ("ds", "ds-again"))
    assert [(i.sha256, i.split) for i in first.items] == [(i.sha256, i.split) for i in again.items]
    for a, b in zip(first.items, again.items, strict=True):
        assert [x.cls for x in a.boxes] == [x.cls for x in b.boxes]
        assert np.allclose([[x.x1, x.y1, x.x2, x.y2] for x in a.boxes], [[x.x1, x.y1, x.x2, x.y2] for x in b.boxes],
                           atol=1e-3)


def test_voc_export_reads_back_with_torchvision(client, tmp_path):
    from torchvision.datasets import VOCDetection

    version = _detect_dataset(client, "ds")
    out = _export(client, "ds", "voc", tmp_path)
    # torchvision looks under <root>/VOCdevkit/VOC<year> (only 2007 has a test set); the export is
    # that folder's contents.
    root = tmp_path / "voc-root"
    (root / "VOCdevkit").mkdir(parents=True)
    out.rename(root / "VOCdevkit" / "VOC2007")
    for split in ("train", "val", "test"):
        ds = VOCDetection(str(root), year="2007", image_set=split, download=False)
        got = {}
        for i in range(len(ds)):
            image, target = ds[i]
            ann = target["annotation"]
            assert image.size == (int(ann["size"]["width"]), int(ann["size"]["height"]))
            objects = ann.get("object", [])
            got[ann["filename"][:16]] = sorted((SHAPE_CLASSES.index(o["name"]), float(o["bndbox"]["xmin"]),
                                                float(o["bndbox"]["ymin"]), float(o["bndbox"]["xmax"]),
                                                float(o["bndbox"]["ymax"])) for o in objects)
        want = _manifest_boxes(client, "ds", split)
        assert got.keys() == want.keys()
        for key in want:
            assert np.allclose(np.array(got[key]).reshape(-1, 5), np.array(want[key]).reshape(-1, 5), atol=1e-3)
    assert len(VOCDetection(str(root), year="2007", image_set="trainval")) == version["counts"]["train"] + \
        version["counts"]["val"]
    assert _reimport_hash(client, "voc", root / "VOCdevkit" / "VOC2007", "ds") == version["content_hash"]


def test_class_folders_export_reads_back_with_torchvision(client, tmp_path):
    from torchvision.datasets import ImageFolder

    make_dataset(client, "cls", "classify", ["cat", "dog"])
    files = {f"{'cat' if i % 3 else 'dog'}/{i}.png": image_bytes(im) for i, (im, _) in
             enumerate(make_shapes(12, size=32, seed=9))}
    assert upload(client, "cls", zip_bytes(files))["result"]["labelled"] == 12
    version = client.post("/datasets/cls/versions", json={"version": "v1", "seed": 4, "val": 0.25, "test": 0.25}).json()
    out = _export(client, "cls", "folders", tmp_path)
    manifest = load_version(client.runtime.store, "cls", "v1")
    for split in ("train", "val", "test"):
        ds = ImageFolder(str(out / split))
        got = {Path(p).name[:16]: ds.classes[t] for p, t in ds.samples}
        assert got == {i.sha256[:16]: manifest.classes[i.label] for i in manifest.items if i.split == split}
    assert _reimport_hash(client, "folders", out, "cls", "classify", ["cat", "dog"]) == version["content_hash"]


def test_export_is_deterministic_and_refuses_formats_of_the_other_task(client, tmp_path):
    _detect_dataset(client, "ds")
    manifest = load_version(client.runtime.store, "ds", "v1")
    blobs = []
    for n in range(2):
        out = ZipOut(tmp_path / f"{n}.zip")
        WRITERS["coco"].write(manifest, client.runtime.store.get_bytes, out)
        out.close()
        blobs.append((tmp_path / f"{n}.zip").read_bytes())
    assert blobs[0] == blobs[1]
    resp = client.post("/datasets/ds/versions/v1/exports/folders")
    assert resp.status_code == 422 and "export this detect version as coco or yolo or voc" in resp.json()["detail"]
    resp = client.get("/datasets/ds/versions/v1/exports/coco")
    assert resp.status_code == 404 and "start one with POST" in resp.json()["detail"]
    assert not client.runtime.store.exists(export_key("ds", "v1", "coco"))


def test_voc_file_names_and_sets(client, tmp_path):
    _detect_dataset(client, "ds")
    out = _export(client, "ds", "voc", tmp_path)
    listed = {s for split in ("train", "val", "test", "trainval")
              for s in (out / "ImageSets" / "Main" / f"{split}.txt").read_text().split()}
    assert listed == {p.stem for p in (out / "Annotations").glob("*.xml")}
    root = ET.parse(next((out / "Annotations").glob("*.xml"))).getroot()
    assert (out / "JPEGImages" / root.findtext("filename")).is_file()


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_missing_images_named_by_label_files_are_reported(client, fmt):
    make_dataset(client, "ds", "detect", SHAPE_CLASSES)
    if fmt == "coco":
        doc = {"images": [{"id": 1, "file_name": "ghost.png", "width": 8, "height": 8}], "annotations": [],
               "categories": [{"id": 1, "name": "circle"}]}
        files = {"a.json": json.dumps(doc).encode()}
    else:
        files = {"ghost.xml": _voc_xml("ghost.png", [])}
    result = upload(client, "ds", zip_bytes(files))["result"]
    assert [r["code"] for r in result["rejected"]] == ["missing_image"]
