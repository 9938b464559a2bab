"""Open an image file a person uploaded, or say clearly why it cannot be used."""
from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError


class ImageInputError(ValueError):
    """The file is not a usable image; the message is meant for the person who sent it."""


# Modes Image.reduce() handles; others (palette, 1-bit, 16-bit) are decoded at full size as before.
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F"}


def open_image(source, name: str = "image", min_side: int | None = 256) -> tuple[Image.Image, list[str]]:
    """Decode a file (a path, or its bytes). Returns (image, notes): notes say what was done to make it
    usable (first frame of an animation...). Raises ImageInputError for empty, non-image, truncated or
    oversized (decompression-bomb) files.

    min_side: the models need 32 px, so a large image is decoded at reduced scale, keeping at least
    min_side px on its short side: JPEGs by DCT scaling while decoding (Pillow's `draft`, 1/2, 1/4 or
    1/8), other formats by an integer box reduction right after decoding (`Image.reduce`). None
    decodes at full size."""
    if isinstance(source, (bytes, bytearray)):
        size, fp = len(source), io.BytesIO(source)
    else:
        path = Path(source)
        name = path.name
        if not path.is_file():
            raise ImageInputError(f"{name}: file not found.")
        size, fp = path.stat().st_size, path
    if size == 0:
        raise ImageInputError(f"{name} is empty (0 bytes): please choose an image file.")
    notes = []
    try:
        with warnings.catch_warnings():
            # Beyond Pillow's limit (about 89 megapixels) Pillow only warns; refuse it as well.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            animated = getattr(img, "is_animated", False) and getattr(img, "n_frames", 1) > 1
            if animated:
                notes.append(f"{name} is animated ({img.n_frames} frames): using its first frame.")
                img.seek(0)
            if min_side and img.format in ("JPEG", "MPO"):
                img.draft(None, (min_side, min_side))  # no-op unless both sides are >= 2 * min_side
            img.load()
            if animated:  # a multi-frame file keeps its file open: keep a copy of the frame, close the file
                frame = img.copy()
                img.close()
                img = frame
            factor = min(img.size) // min_side if min_side else 1
            if factor >= 2 and img.mode in _REDUCIBLE:
                img = _reduced(img, factor)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(f"{name} is too large to decode safely (over {Image.MAX_IMAGE_PIXELS:,} pixels). "
                              f"Please resize it below about 9000 x 9000 pixels.") from None
    except UnidentifiedImageError:
        raise ImageInputError(f"{name} is not an image Pillow can read (JPEG, PNG, WebP, GIF, BMP, TIFF...).") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(f"{name} could not be decoded; it looks damaged or truncated ({e}).") from None
    return img, notes


def _reduced(img: Image.Image, factor: int) -> Image.Image:
    """img shrunk by an integer box filter, keeping its metadata (EXIF orientation, ICC profile)."""
    out = img.reduce(factor)
    out.info.update(img.info)
    img.close()
    return out


def frame_image(payload, min_side: int = 64) -> Image.Image:
    """A streamed frame (a dict with a `data:` URL or a `path`, raw bytes, or a path) -> an RGB PIL image
    whose shorter side is at least `min_side` (decoded at reduced size when the format allows it).
    Raises ImageInputError when the frame is missing or cannot be decoded."""
    data = payload
    if isinstance(payload, dict):
        url = payload.get("url") or ""
        data = url if url.startswith("data:") else payload.get("path")
    if isinstance(data, str) and data.startswith("data:"):
        try:
            data = base64.b64decode(data.split(",", 1)[1], validate=False)
        except (IndexError, binascii.Error, ValueError):
            raise ImageInputError("The webcam frame is not a valid data URL.") from None
    elif isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise ImageInputError("The webcam frame did not arrive.")
        data = path.read_bytes()
    if not data:
        raise ImageInputError("The webcam frame is empty.")
    try:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (min_side, min_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, never below min_side
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(f"The webcam frame could not be decoded ({e}).") from None
    return img.convert("RGB")
