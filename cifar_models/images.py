"""Open an image file a person uploaded, or say clearly why it cannot be used."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError


class ImageInputError(ValueError):
    """The file is not a usable image; the message is meant for the person who sent it."""


def open_image(source, name: str = "image") -> tuple[Image.Image, list[str]]:
    """Decode a file (a path, or its bytes) fully. Returns (image, notes): notes say what was done to
    make it usable (first frame of an animation...). Raises ImageInputError for empty, non-image,
    truncated or oversized (decompression-bomb) files."""
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
            if getattr(img, "is_animated", False) and getattr(img, "n_frames", 1) > 1:
                notes.append(f"{name} is animated ({img.n_frames} frames): using its first frame.")
                img.seek(0)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(f"{name} is too large to decode safely (over {Image.MAX_IMAGE_PIXELS:,} pixels). "
                              f"Please resize it below about 9000 x 9000 pixels.") from None
    except UnidentifiedImageError:
        raise ImageInputError(f"{name} is not an image Pillow can read (JPEG, PNG, WebP, GIF, BMP, TIFF...).") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(f"{name} could not be decoded; it looks damaged or truncated ({e}).") from None
    return img, notes
