"""Bringing an import's files onto local disk safely: a zip (upload or store), a folder, or a
prefix in the store. Zip entries are checked against the central directory first (unsafe names,
links, encryption, declared sizes and compression ratios) and again while they are extracted
(actual bytes), because a central directory can lie. Entries are extracted under numbered names,
never under their own, so no entry name can reach outside the staging folder."""

from __future__ import annotations

import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tango.store import Store

GiB, MiB = 1 << 30, 1 << 20
CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_JUNK = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


class ImportLimits(BaseModel):
    """Safety limits of one import. A job may tighten them, never loosen them (the maxima)."""

    model_config = ConfigDict(extra="forbid")

    max_files: int = Field(200_000, ge=1, le=200_000)
    max_total_bytes: int = Field(20 * GiB, ge=1, le=20 * GiB, description="uncompressed, all files")
    max_file_bytes: int = Field(256 * MiB, ge=1, le=256 * MiB)
    max_ratio: float = Field(100.0, ge=1.0, le=100.0, description="uncompressed / compressed, per entry")
    ratio_min_bytes: int = Field(MiB, ge=0, le=MiB, description="smaller entries may compress better")
    max_image_pixels: int = Field(89_478_485, ge=1, le=89_478_485, description="Pillow's own default")


class ImportRefused(Exception):
    """The whole import is refused (nothing is written): the archive itself is unusable or unsafe."""


@dataclass
class Report:
    """Per-file outcome of an import, in the order files were met."""

    rejected: list[dict] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)

    def reject(self, name: str, code: str, message: str) -> None:
        self.rejected.append({"file": name, "code": code, "message": message})

    def ignore(self, name: str, reason: str) -> None:
        self.ignored.append({"file": name, "reason": reason})


@dataclass(frozen=True)
class Entry:
    name: str  # relative, '/'-separated, as the archive or folder names it
    path: Path  # where its bytes are on local disk


def safe_name(raw: str) -> str:
    """The entry's relative path, or FileProblem-style ValueError naming why it is unsafe."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        raise ValueError("absolute path")
    if any(ord(c) < 32 for c in name):
        raise ValueError("control character in the name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError("'..' in the path (would write outside the import)")
    if not parts:
        raise ValueError("empty name")
    return "/".join(parts)


def is_junk(name: str) -> bool:
    parts = name.split("/")
    return parts[0] == "__MACOSX" or parts[-1] in _JUNK or any(p.startswith(".") for p in parts)


def stage_zip(archive: Path, staging: Path, limits: ImportLimits, report: Report) -> list[Entry]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImportRefused(f"the archive is not a readable zip file ({exc})") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > limits.max_files:
            raise ImportRefused(f"the archive holds {len(infos)} files, over the {limits.max_files}-file limit")
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_total_bytes:
            raise ImportRefused(f"the archive would expand to {declared} bytes, over the "
                                f"{limits.max_total_bytes}-byte limit (zip bomb?)")
        entries: list[Entry] = []
        seen: set[str] = set()
        total = 0
        for n, info in enumerate(infos):
            try:
                name = safe_name(info.filename)
            except ValueError as exc:
                report.reject(info.filename, "unsafe_path", f"refused entry name: {exc}")
                continue
            if is_junk(name):
                report.ignore(name, "hidden or system file")
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                report.reject(name, "unsafe_path", "symbolic links are not extracted")
                continue
            if info.flag_bits & 0x1:
                report.reject(name, "encrypted", "encrypted entries cannot be read")
                continue
            if name in seen:
                report.reject(name, "duplicate_name", "the archive holds two entries of this name")
                continue
            seen.add(name)
            if info.file_size > limits.max_file_bytes:
                report.reject(name, "file_too_large",
                              f"{info.file_size} bytes, over the {limits.max_file_bytes}-byte limit per file")
                continue
            ratio = info.file_size / max(1, info.compress_size)
            if info.file_size > limits.ratio_min_bytes and ratio > limits.max_ratio:
                report.reject(name, "zip_bomb", f"compression ratio {ratio:.0f}:1 is over the "
                                                f"{limits.max_ratio:.0f}:1 limit")
                continue
            dest = staging / f"{n:07d}"
            try:
                written = _extract(zf, info, dest, limits, total)
            except _EntryProblem as exc:
                dest.unlink(missing_ok=True)
                report.reject(name, exc.code, exc.message)
                continue
            total += written
            entries.append(Entry(name, dest))
    return entries


class _EntryProblem(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, limits: ImportLimits, total: int) -> int:
    written = 0
    try:
        with zf.open(info) as src, dest.open("wb") as out:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                if total + written > limits.max_total_bytes:
                    raise ImportRefused(f"the archive expanded past the {limits.max_total_bytes}-byte "
                                        "limit while extracting (its directory understates sizes: zip bomb?)")
                if written > info.file_size or written > limits.max_file_bytes:
                    raise _EntryProblem("zip_bomb", f"expanded past its declared {info.file_size} bytes")
                if written > limits.ratio_min_bytes and written / max(1, info.compress_size) > limits.max_ratio:
                    raise _EntryProblem("zip_bomb", f"expanded past the {limits.max_ratio:.0f}:1 "
                                                    "compression-ratio limit")
                out.write(chunk)
    except ImportRefused:
        dest.unlink(missing_ok=True)
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise _EntryProblem("corrupt_entry", f"the archive entry cannot be read ({exc})") from None
    return written


def stage_folder(root: Path, limits: ImportLimits, report: Report) -> list[Entry]:
    """Files under a folder on the worker, read in place; links are not followed."""
    if not root.is_dir():
        raise ImportRefused(f"{root} is not a folder on the worker")
    entries: list[Entry] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            name = path.relative_to(root).as_posix()
            if is_junk(name):
                report.ignore(name, "hidden or system file")
                continue
            if path.is_symlink():
                report.reject(name, "unsafe_path", "symbolic links are not followed")
                continue
            size = path.stat().st_size
            if size > limits.max_file_bytes:
                report.reject(name, "file_too_large", f"{size} bytes, over the {limits.max_file_bytes}-byte limit")
                continue
            total += size
            if len(entries) >= limits.max_files or total > limits.max_total_bytes:
                raise ImportRefused(f"the folder holds more than {limits.max_files} files or "
                                    f"{limits.max_total_bytes} bytes")
            entries.append(Entry(name, path))
    return entries


def stage_store_prefix(store: Store, prefix: str, staging: Path, limits: ImportLimits,
                       report: Report) -> list[Entry]:
    keys = store.list(prefix)
    if not keys:
        raise ImportRefused(f"nothing is stored under {prefix!r}")
    if len(keys) > limits.max_files:
        raise ImportRefused(f"{len(keys)} files under {prefix!r}, over the {limits.max_files}-file limit")
    entries, total = [], 0
    for n, key in enumerate(keys):
        name = key[len(prefix):].lstrip("/")
        if is_junk(name):
            report.ignore(name, "hidden or system file")
            continue
        data = store.get_bytes(key)
        if len(data) > limits.max_file_bytes:
            report.reject(name, "file_too_large", f"{len(data)} bytes, over the {limits.max_file_bytes}-byte limit")
            continue
        total += len(data)
        if total > limits.max_total_bytes:
            raise ImportRefused(f"the files under {prefix!r} exceed {limits.max_total_bytes} bytes")
        dest = staging / f"{n:07d}"
        dest.write_bytes(data)
        entries.append(Entry(name, dest))
    return entries
