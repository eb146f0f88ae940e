"""Receiving an import's zip over HTTP: streamed to a temporary file as it arrives (never held in
memory), under the upload limit, as a multipart form field `file` or as a raw application/zip
body. Needs the app's body-size middleware to let this route through (see the report)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

# Until the kernel's Settings grows `max_upload_bytes` (TANGO_MAX_UPLOAD_BYTES), this default holds.
DEFAULT_MAX_UPLOAD_BYTES = 4 << 30


def upload_limit(settings: object) -> int:
    return int(getattr(settings, "max_upload_bytes", DEFAULT_MAX_UPLOAD_BYTES))


def _too_big(limit: int) -> HTTPException:
    return HTTPException(413, detail=f"the upload is larger than the {limit}-byte limit; split it, or import "
                                     "from a folder or the store instead")


class _Sink:
    def __init__(self, path: Path, limit: int):
        self.file, self.size, self.limit = path.open("wb"), 0, limit

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise _too_big(self.limit)
        self.file.write(data)


async def receive_zip(request: Request, dest: Path, *, limit: int) -> str:
    """Write the uploaded zip to `dest`; returns the client's file name (or 'upload.zip')."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + 64 * 1024:
        raise _too_big(limit)
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    sink = _Sink(dest, limit)
    try:
        if ctype == b"multipart/form-data":
            return await _multipart(request, sink, options.get(b"boundary", b""))
        if ctype in (b"application/zip", b"application/x-zip-compressed", b"application/octet-stream"):
            async for chunk in request.stream():
                sink.write(chunk)
            return "upload.zip"
        raise HTTPException(415, detail="send the zip as multipart/form-data (field 'file') or as an "
                                        "application/zip body")
    finally:
        sink.file.close()


async def _multipart(request: Request, sink: _Sink, boundary: bytes) -> str:
    if not boundary:
        raise HTTPException(400, detail="the multipart body has no boundary")
    state = {"header": b"", "value": b"", "name": None, "filename": None, "in_file": False, "found": False}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        if state["header"].lower() == b"content-disposition":
            _, opts = parse_options_header(state["value"])
            state["name"] = opts.get(b"name", b"").decode("utf-8", "replace")
            state["filename"] = opts.get(b"filename", b"").decode("utf-8", "replace") or None
        state["header"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        state["in_file"] = state["name"] == "file" and not state["found"]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["in_file"]:
            sink.write(data[start:end])

    def on_part_end() -> None:
        if state["in_file"]:
            state["found"], state["in_file"] = True, False
        state["name"] = None

    parser = MultipartParser(boundary, {"on_header_field": on_header_field, "on_header_value": on_header_value,
                                        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
                                        "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise HTTPException(400, detail=f"the multipart body is malformed ({exc})") from None
    if not state["found"]:
        raise HTTPException(422, detail="the multipart form has no 'file' field with the zip")
    name = state["filename"] or "upload.zip"
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(name.replace("\\", "/")).name)[:100] or "upload.zip"
