"""What label readers hand the importer, and the helpers they share."""

from __future__ import annotations

import json
import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from labelling.archives import Entry, Report

LABEL_SUFFIXES = frozenset({".json", ".txt", ".xml", ".yaml", ".yml", ".names"})
_LS_PREFIX = re.compile(r"^[0-9a-f]{8}-")
# Fixed zip timestamps: the same version exports to the same bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class BoxIn:
    cls: str
    x1: float
    y1: float
    x2: float
    y2: float
    normalized: bool = False  # fractions of the image's width/height, not pixels


@dataclass
class LabelIn:
    source: str  # the label file it came from
    class_name: str | None = None  # classify
    boxes: list[BoxIn] | None = None  # detect ([] = labelled, nothing in it)
    problem: tuple[str, str] | None = None  # (code, message) found while parsing


@dataclass
class Parsed:
    task: str | None
    labels: dict[str, LabelIn] = field(default_factory=dict)  # image entry name -> label
    classes: list[str] = field(default_factory=list)  # declared by the label files, in order


class LabelFiles:
    """The import's non-image files, by name, read lazily (and JSON parsed once)."""

    def __init__(self, entries: list[Entry]):
        self.entries = {e.name: e for e in entries}
        self._json: dict[str, Any] = {}
        self.used: set[str] = set()

    def names(self, *suffixes: str) -> list[str]:
        return sorted(n for n in self.entries if PurePosixPath(n).suffix.lower() in suffixes)

    def bytes(self, name: str) -> bytes:
        return self.entries[name].path.read_bytes()

    def text(self, name: str) -> str:
        return self.bytes(name).decode("utf-8-sig")

    def json(self, name: str) -> Any:
        """Parsed JSON, or None when the file is not JSON (the caller reports it if it claims it)."""
        if name not in self._json:
            try:
                self._json[name] = json.loads(self.text(name))
            except (UnicodeDecodeError, json.JSONDecodeError):
                self._json[name] = None
        return self._json[name]


class Matcher:
    """Finds the image a label file refers to: by exact path, by path suffix, or by a unique file
    name (Label Studio prefixes uploads with 8 hex digits and a dash)."""

    def __init__(self, image_names: list[str]):
        self.names = set(image_names)
        self.by_base: dict[str, list[str]] = defaultdict(list)
        for name in image_names:
            base = PurePosixPath(name).name
            self.by_base[base].append(name)
            stripped = _LS_PREFIX.sub("", base)
            if stripped != base:
                self.by_base[stripped].append(name)

    def find(self, ref: str, *, near: str = "") -> str | None:
        ref = ref.replace("\\", "/")
        while ref.startswith("./"):
            ref = ref[2:]
        ref = ref.lstrip("/")
        if ref in self.names:
            return ref
        if near:
            joined = str(PurePosixPath(near).parent / ref)
            if joined in self.names:
                return joined
        suffixed = [n for n in self.names if n.endswith("/" + ref)] if "/" in ref else []
        if len(suffixed) == 1:
            return suffixed[0]
        base = PurePosixPath(ref).name
        for candidate in (base, _LS_PREFIX.sub("", base)):
            found = self.by_base.get(candidate, [])
            if len(found) == 1:
                return found[0]
        return None


class ZipOut:
    """A deterministic zip, written entry by entry: fixed timestamps and permissions, images
    stored (already compressed), text deflated. Writers add entries in a fixed order."""

    def __init__(self, path: Path):
        self.zf = zipfile.ZipFile(path, "w")

    def add(self, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
        info.external_attr = 0o644 << 16
        text = PurePosixPath(name).suffix in (".json", ".txt", ".xml", ".yaml")
        info.compress_type = zipfile.ZIP_DEFLATED if text else zipfile.ZIP_STORED
        self.zf.writestr(info, data)

    def close(self) -> None:
        self.zf.close()


def export_name(sha256: str, key: str) -> str:
    """Exported images are named by content (a frozen version has no other names)."""
    return f"{sha256[:16]}{PurePosixPath(key).suffix}"


ReadImage = Callable[[str], bytes]
__all__ = ["BoxIn", "LabelIn", "Parsed", "LabelFiles", "Matcher", "Report", "ZipOut", "export_name",
           "ReadImage", "LABEL_SUFFIXES"]
