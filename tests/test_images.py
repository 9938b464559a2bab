"""open_image: large photos are decoded at reduced scale, and that changes neither orientation nor content."""
import io

import numpy as np
import pytest
from PIL import Image

from cifar_models.common.images import ImageInputError, open_image
from cifar_models.inference import to_cifar_uint8


def _photo(w, h):
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1)
    rgb[: h // 3, : w // 3] = (250, 30, 30)  # a red block top-left: shows orientation
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _bytes(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_images_are_decoded_small_with_the_same_32px_result(fmt):
    data = _bytes(_photo(3000, 2000), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    small, _ = open_image(data)
    full, _ = open_image(data, min_side=None)
    assert full.size == (3000, 2000)
    assert min(small.size) >= 256 and max(small.size) < 3000 / 3  # 1/4 of the side for both formats here
    a, b = to_cifar_uint8(small).int(), to_cifar_uint8(full).int()
    assert (a - b).abs().float().mean() < 2.0 and (a - b).abs().max() < 24


def test_small_images_are_untouched():
    img = _photo(300, 200)
    out, _ = open_image(_bytes(img, "PNG"))
    assert out.size == (300, 200) and np.array_equal(np.asarray(out), np.asarray(img))


def test_exif_orientation_survives_the_reduced_decode():
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer rotates 90 degrees clockwise
    stored = _photo(2400, 1600).transpose(Image.Transpose.ROTATE_90)  # stored 1600 wide, 2400 high
    for fmt in ("JPEG", "PNG"):
        img, _ = open_image(_bytes(stored, fmt, exif=exif))
        from PIL import ImageOps
        upright = np.asarray(ImageOps.exif_transpose(img))
        assert upright.shape[1] > upright.shape[0]  # displayed landscape
        h, w = upright.shape[:2]
        assert upright[h // 10, w // 10, 0] > 200 and upright[h // 10, w // 10, 1] < 90, fmt  # red block top-left


def test_animated_first_frame_and_bad_files():
    frames = [Image.new("RGB", (600, 600), c) for c in ("red", "green")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    img, notes = open_image(buf.getvalue())
    assert "animated (2 frames)" in notes[0] and img.convert("RGB").getpixel((5, 5))[0] > 200
    with pytest.raises(ImageInputError, match="empty"):
        open_image(b"")
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        data = _bytes(_photo(800, 600), "JPEG")
        open_image(data[: len(data) // 3])
