"""Checking one image file: a real, complete JPEG/PNG/BMP/WebP of a sane size, or a precise reason
why not."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image

# Pillow format name -> the extension the store keeps it under (from the content, not the name).
FORMATS = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "WEBP": "webp"}
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "bmp": "image/bmp", "webp": "image/webp"}


class FileProblem(Exception):
    """One file's refusal: a stable `code` for programs, a message for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class CheckedImage:
    sha256: str
    ext: str
    width: int
    height: int
    image: Image.Image  # decoded, RGB


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FileProblem("decompression_bomb", f"refused as a decompression bomb: {exc}") from None
    except Exception:  # noqa: BLE001
        # UnidentifiedImageError, or whatever a patched Image.open raises instead (Ultralytics,
        # when imported in the same process, swaps in one that tries to load a HEIF plugin).
        raise FileProblem("corrupt_image", "not a readable image (unknown or damaged header)") from None


def check_image(data: bytes, *, max_pixels: int) -> CheckedImage:
    """Open, verify and fully decode; Pillow's decompression-bomb warning counts as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with _open(data) as probe:
                fmt, (width, height) = probe.format, probe.size
                if fmt not in FORMATS:
                    raise FileProblem("unsupported_format", f"{fmt} images are not supported; use JPEG, PNG, "
                                                            "BMP or WebP")
                if width * height > max_pixels:
                    raise FileProblem("decompression_bomb", f"{width}x{height} pixels is over the "
                                                            f"{max_pixels}-pixel limit")
                probe.verify()
            with _open(data) as im:
                im.load()
                rgb = im.convert("RGB")
        except FileProblem:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise FileProblem("decompression_bomb", f"refused as a decompression bomb: {exc}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            text = str(exc)
            if "truncated" in text.lower() or isinstance(exc, EOFError):
                raise FileProblem("truncated_image", f"the image data ends early ({text or 'EOF'})") from None
            raise FileProblem("corrupt_image", f"the image data is damaged ({text})") from None
    if width < 1 or height < 1:
        raise FileProblem("corrupt_image", f"the image has no pixels ({width}x{height})")
    return CheckedImage(hashlib.sha256(data).hexdigest(), FORMATS[fmt], width, height, rgb)
