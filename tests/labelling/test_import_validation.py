"""Every bad input an import can meet is reported per file with a precise code, good files beside
it are kept, and a file that is refused leaves the store and the DB exactly as they were."""

from __future__ import annotations

import json
import struct
import zipfile
import zlib

import numpy as np
import pytest

from tests.factories import image_bytes, zip_bytes
from tests.labelling.conftest import make_dataset, snapshot, start, upload

RNG = np.random.default_rng(7)
GOOD = RNG.integers(0, 255, (24, 32, 3), dtype=np.uint8)  # 32 wide, 24 high
GOOD_PNG = image_bytes(GOOD)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes that declare a huge PNG: the classic decompression bomb header."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def coco(boxes: list[tuple[int, list[float]]], *, categories=("circle",)) -> bytes:  # noqa: ANN001
    return json.dumps({
        "images": [{"id": 1, "file_name": "img.png", "width": 32, "height": 24}],
        "annotations": [{"id": n + 1, "image_id": 1, "category_id": c, "bbox": b} for n, (c, b) in enumerate(boxes)],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(categories)]}).encode()


BAD_FILES = {
    "corrupt image": ({"a.jpg": b"these bytes are no image at all"}, "a.jpg", "corrupt_image", "not a readable image"),
    "truncated image": ({"b.png": GOOD_PNG[: len(GOOD_PNG) // 2]}, "b.png", "truncated_image", "ends early"),
    "decompression bomb": ({"c.png": png_claiming(100_000, 100_000)}, "c.png", "decompression_bomb",
                           "decompression bomb"),
    "bomb warning is an error": ({"c2.png": png_claiming(10_000, 10_000)}, "c2.png", "decompression_bomb",
                                 "exceeds limit of 89478485 pixels"),
    "unsupported image type": ({"d.gif": image_bytes(GOOD, "GIF")}, "d.gif", "unsupported_format", ".gif images"),
    "GIF named .png": ({"e.png": image_bytes(GOOD, "GIF")}, "e.png", "unsupported_format", "GIF images"),
    "zip slip with ..": ({"../escape.png": GOOD_PNG}, "../escape.png", "unsafe_path", "'..' in the path"),
    "zip slip nested ..": ({"imgs/../../x.png": GOOD_PNG}, "imgs/../../x.png", "unsafe_path", "'..' in the path"),
    "absolute path": ({"/etc/abs.png": GOOD_PNG}, "/etc/abs.png", "unsafe_path", "absolute path"),
    "drive letter": ({"C:/win.png": GOOD_PNG}, "C:/win.png", "unsafe_path", "absolute path"),
    "zip bomb by ratio": ({"zeros.bmp": b"\0" * (3 << 20)}, "zeros.bmp", "zip_bomb", "compression ratio"),
    "unknown class (COCO)": ({"img.png": GOOD_PNG, "annotations.json": coco([(9, [1, 1, 5, 5])])}, "img.png",
                             "unknown_class", "category_id 9"),
    "unknown class (YOLO)": ({"images/img.png": GOOD_PNG, "labels/img.txt": b"5 0.5 0.5 0.2 0.2\n",
                              "data.yaml": b"names: [circle]\n"}, "images/img.png", "unknown_class",
                             "class index 5"),
    "box outside the image": ({"img.png": GOOD_PNG, "annotations.json": coco([(1, [20, 10, 30, 5])])}, "img.png",
                              "box_outside_image", "outside the 32x24 image"),
    "box with no area": ({"img.png": GOOD_PNG, "annotations.json": coco([(1, [5, 5, 0, 4])])}, "img.png",
                         "invalid_label", "has no area"),
    "XML entity expansion": ({"img.xml": b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxx">]>'
                                         b"<annotation><filename>&x;</filename></annotation>"},
                             "img.xml", "invalid_label_file", "DOCTYPE"),
    "broken YOLO line": ({"images/img.png": GOOD_PNG, "labels/img.txt": b"0 0.5 nope 0.2\n",
                          "data.yaml": b"names: [circle]\n"}, "images/img.png", "invalid_label", "line 1"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_each_bad_file_is_reported_and_changes_nothing(client, case):
    files, name, code, fragment = BAD_FILES[case]
    make_dataset(client, "ds", "detect", ["circle"])
    before = snapshot(client)
    job = upload(client, "ds", zip_bytes(files))
    assert job["state"] == "succeeded", job["error"]
    result = job["result"]
    assert result["imported"] == 0
    problems = [r for r in result["rejected"] if r["file"] == name]
    assert problems and problems[0]["code"] == code, result["rejected"]
    assert fragment in problems[0]["message"], problems[0]
    assert snapshot(client) == before


def test_good_files_are_kept_beside_bad_ones(client):
    make_dataset(client, "ds", "detect", ["circle"])
    store_before = set(client.runtime.store.list("datasets"))
    other = image_bytes(RNG.integers(0, 255, (10, 12, 3), dtype=np.uint8), "JPEG")
    files = {name: data for case in ("corrupt image", "zip slip with ..", "zip bomb by ratio", "truncated image")
             for name, data in BAD_FILES[case][0].items()}
    files |= {"good/one.png": GOOD_PNG, "good/two.jpg": other, "notes.md": b"# hello"}
    result = upload(client, "ds", zip_bytes(files))["result"]
    assert result["imported"] == 2 and result["labelled"] == 0
    assert sorted(r["code"] for r in result["rejected"]) == ["corrupt_image", "truncated_image", "unsafe_path",
                                                             "zip_bomb"]
    assert result["ignored"] == [{"file": "notes.md", "reason": "neither an image nor a label file"}]
    added = set(client.runtime.store.list("datasets")) - store_before
    assert len(added) == 2 and {k.rsplit(".", 1)[1] for k in added} == {"png", "jpg"}
    images = client.get("/datasets/ds/images").json()
    assert images["total"] == 2 and {i["source_name"] for i in images["items"]} == {"good/one.png", "good/two.jpg"}


def test_duplicates_by_content_within_and_across_imports(client):
    make_dataset(client, "ds", "detect", ["circle"])
    first = upload(client, "ds", zip_bytes({"a.png": GOOD_PNG, "copy/b.png": GOOD_PNG}))["result"]
    assert first["imported"] == 1
    assert first["rejected"] == [{"file": "copy/b.png", "code": "duplicate", "message": "same content as a.png"}]
    before = snapshot(client)
    again = upload(client, "ds", zip_bytes({"again.png": GOOD_PNG}))["result"]
    assert again["imported"] == 0 and again["rejected"][0]["code"] == "duplicate"
    assert "already in the dataset as image" in again["rejected"][0]["message"]
    assert snapshot(client) == before


def test_symlink_entries_are_refused(client):
    make_dataset(client, "ds", "detect", ["circle"])
    info = zipfile.ZipInfo("link.png")
    info.external_attr = 0o120777 << 16
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    before = snapshot(client)
    result = upload(client, "ds", buf.getvalue())["result"]
    assert result["rejected"] == [{"file": "link.png", "code": "unsafe_path",
                                   "message": "symbolic links are not extracted"}]
    assert snapshot(client) == before


def _lie_about_size(data: bytes, name: str, declared: int) -> bytes:
    """Rewrite an entry's uncompressed size in its local header and the central directory."""
    info = zipfile.ZipFile(__import__("io").BytesIO(data)).getinfo(name)
    out = bytearray(data)
    out[info.header_offset + 22:info.header_offset + 26] = struct.pack("<I", declared)
    central = out.find(b"PK\x01\x02")
    out[central + 24:central + 28] = struct.pack("<I", declared)
    return bytes(out)


def test_a_central_directory_that_understates_sizes_is_caught_while_extracting(client):
    make_dataset(client, "ds", "detect", ["circle"])
    data = _lie_about_size(zip_bytes({"big.bmp": b"\x01" * 200_000}), "big.bmp", 1_000)
    before = snapshot(client)
    result = upload(client, "ds", data)["result"]
    # Extraction stops at the declared size; the entry's bytes then fail their CRC: never trusted.
    assert [r["code"] for r in result["rejected"]] == ["corrupt_entry"]
    assert snapshot(client) == before


def test_total_size_limit_refuses_the_whole_archive(client, tmp_path):
    make_dataset(client, "ds", "detect", ["circle"])
    archive = tmp_path / "many.zip"
    archive.write_bytes(zip_bytes({f"img{i}.png": image_bytes(np.full((8, 8, 3), i, np.uint8)) for i in range(20)}))
    before = snapshot(client)
    job = start(client, "import", dataset_id="ds", source={"path": str(archive)},
                limits={"max_total_bytes": 1000})
    assert job["state"] == "failed"
    assert "over the 1000-byte limit (zip bomb?)" in job["error"]
    assert snapshot(client) == before


def test_limits_cannot_be_loosened(client):
    make_dataset(client, "ds", "detect", ["circle"])
    resp = client.post("/jobs", json={"kind": "import", "params": {
        "dataset_id": "ds", "source": {"path": "/tmp"}, "limits": {"max_ratio": 10_000}}})
    assert resp.status_code == 422 and "max_ratio" in resp.json()["detail"]


def test_image_pixel_limit_can_be_tightened(client, tmp_path):
    make_dataset(client, "ds", "detect", ["circle"])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big.png").write_bytes(image_bytes(np.zeros((40, 40, 3), np.uint8)))
    job = start(client, "import", dataset_id="ds", source={"path": str(tmp_path / "in")},
                limits={"max_image_pixels": 1000})
    assert job["result"]["rejected"] == [{"file": "big.png", "code": "decompression_bomb",
                                          "message": "40x40 pixels is over the 1000-pixel limit"}]


def test_unknown_class_against_the_datasets_classes(client):
    make_dataset(client, "ds", "detect", ["circle"])
    files = {"img.png": GOOD_PNG, "annotations.json": coco([(2, [1, 1, 5, 5])], categories=("circle", "dragon"))}
    before = snapshot(client)
    result = upload(client, "ds", zip_bytes(files))["result"]
    assert result["rejected"][0]["code"] == "unknown_class"
    assert "'dragon' is not among the dataset's classes (circle)" in result["rejected"][0]["message"]
    assert snapshot(client) == before
    # Asked to, the import adds the class and keeps the image.
    result = upload(client, "ds", zip_bytes(files), add_new_classes="true")["result"]
    assert result["imported"] == 1 and result["new_classes"] == ["dragon"]


def test_an_unreadable_archive_fails_the_job_and_writes_nothing(client, tmp_path):
    make_dataset(client, "ds", "detect", ["circle"])
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 definitely not a whole zip")
    before = snapshot(client)
    job = start(client, "import", dataset_id="ds", source={"path": str(bad)})
    assert job["state"] == "failed" and "not a readable zip file" in job["error"]
    assert snapshot(client) == before


def test_upload_that_is_no_zip_is_refused_at_once(client):
    make_dataset(client, "ds", "detect", ["circle"])
    resp = client.post("/datasets/ds/imports", files={"file": ("x.zip", b"hello", "application/zip")})
    assert resp.status_code == 422 and "not a zip archive" in resp.json()["detail"]
    assert client.get("/jobs").json()["total"] == 0


def test_labels_of_the_wrong_task_refuse_the_import(client):
    make_dataset(client, "cls", "classify", ["circle"])
    before = snapshot(client)
    job = upload(client, "cls", zip_bytes({"img.png": GOOD_PNG, "annotations.json": coco([(1, [1, 1, 5, 5])])}),
                 format="auto")
    # auto: COCO is not a classify format, so the zip's class-less image comes in unlabelled
    assert job["state"] == "succeeded" and job["result"]["format"] == "none"
    resp = client.post("/jobs", json={"kind": "import", "params": {"dataset_id": "cls", "format": "coco",
                                                                   "source": {"path": "/tmp"}}})
    assert resp.status_code == 422 and "classify dataset" in resp.json()["detail"]
    assert snapshot(client)[1][0] == before[1][0] + 1
