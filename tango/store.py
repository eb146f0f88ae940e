"""Artifact store addressed by an fsspec URL. Artifacts are written once: temp name, then rename."""

from __future__ import annotations

import errno
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class StoreError(Exception):
    pass


class InvalidKey(StoreError, ValueError):
    pass


class ArtifactExists(StoreError, FileExistsError):
    pass


class ArtifactMissing(StoreError, FileNotFoundError):
    pass


def validate_key(key: str) -> str:
    """Store keys are relative, '/'-separated names; nothing may climb out of the store."""
    if not isinstance(key, str) or not key or len(key) > 512:
        raise InvalidKey(f"store key must be 1..512 characters, got {key!r}")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", "..") or not _SEGMENT.match(part):
            raise InvalidKey(
                f"store key {key!r} has an invalid segment {part!r}: use letters, digits, '.', '_' "
                "and '-', no empty, '.' or '..' segments, no leading '/'"
            )
    return key


class Store:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")
        self._local = isinstance(self.fs, LocalFileSystem)
        if self._local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> str:
        return f"{self.root}/{validate_key(key)}"

    def url_for(self, key: str) -> str:
        return f"{self.url}/{validate_key(key)}"

    def key_from_url(self, url: str) -> str:
        prefix = self.url + "/"
        if not url.startswith(prefix):
            raise InvalidKey(f"{url!r} is not inside the store {self.url!r}")
        return validate_key(url[len(prefix) :])

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def put_bytes(self, key: str, data: bytes) -> str:
        path = self._path(key)
        if self.fs.exists(path):
            raise ArtifactExists(f"artifact {key!r} already exists; artifacts are written once")
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        self.fs.pipe_file(tmp, data)
        try:
            if self._local:
                # link() refuses an existing target, so two racing writers cannot both win.
                try:
                    os.link(tmp, path)
                except OSError as exc:
                    if exc.errno == errno.EEXIST:
                        raise ArtifactExists(
                            f"artifact {key!r} already exists; artifacts are written once"
                        ) from exc
                    raise
            else:
                self.fs.mv(tmp, path)
                tmp = None
        finally:
            if tmp is not None:
                self.fs.rm_file(tmp)
        return self.url_for(key)

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Write once, tolerating a previous attempt of the same job that already wrote it."""
        try:
            return self.put_bytes(key, data)
        except ArtifactExists:
            return self.url_for(key)

    def put_json(self, key: str, obj: Any) -> str:
        return self.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True).encode())

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> str:
        return self.put_bytes(key, Path(local_path).read_bytes())

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError as exc:
            raise ArtifactMissing(f"artifact {key!r} does not exist") from exc

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def list(self, prefix: str) -> list[str]:
        """Keys below `prefix`, sorted, temp files excluded."""
        base = self._path(prefix)
        if not self.fs.exists(base):
            return []
        keys = []
        for path in self.fs.find(base):
            rel = path[len(self.root) + 1 :] if path.startswith(self.root) else path
            if not rel.rsplit("/", 1)[-1].startswith(".tmp-"):
                keys.append(rel)
        return sorted(keys)

    def check(self) -> None:
        """Readiness: the store answers a real write, read and delete."""
        probe = f"{self.root}/.probe/{uuid.uuid4().hex}"
        self.fs.makedirs(probe.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(probe, b"ok")
        try:
            if self.fs.cat_file(probe) != b"ok":
                raise StoreError("store read back different bytes than were written")
        finally:
            self.fs.rm_file(probe)
