"""The live webcam's per-frame work: decode a streamed frame small, run every model, measure the rate."""
import base64
import io

import pytest
from PIL import Image

from cifar_models import load_classifier
from cifar_models.common.images import ImageInputError
from cifar_models.common.images import frame_image
from cifar_models.dashboard.webcam import RateMeter, frame_id
from cifar_models.serve.lab import live_predictions


def jpeg_bytes(size=(320, 240), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, colour)
    img.paste((20, 20, 220), (size[0] // 2, 0, size[0], size[1]))
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def data_url(data: bytes) -> dict:
    return {"path": None, "url": "data:image/jpeg;base64," + base64.b64encode(data).decode()}


def test_frames_decode_from_data_urls_paths_and_bytes_at_reduced_size(tmp_path):
    data = jpeg_bytes((640, 480))
    path = tmp_path / "frame.jpg"
    path.write_bytes(data)
    for payload in (data_url(data), {"path": str(path), "url": None}, str(path), data):
        img = frame_image(payload, min_side=64)
        assert img.mode == "RGB" and min(img.size) >= 64
        assert img.size == (160, 120)  # the JPEG decoder's 1/4 scale: the smallest not below 64 px
        assert img.getpixel((10, 60))[0] > 150 and img.getpixel((150, 60))[2] > 150  # the colours survive
    png = io.BytesIO()
    Image.new("RGB", (50, 40), "green").save(png, "PNG")
    assert frame_image(png.getvalue()).size == (50, 40)  # formats without reduced decoding: full size


@pytest.mark.parametrize("payload, message", [
    ({"path": None, "url": "data:image/jpeg;base64,"}, "empty"),
    ({"path": None, "url": "data:image/jpeg;base64,bm90IGFuIGltYWdl"}, "could not be decoded"),
    ({"path": "/nonexistent/frame.jpg", "url": None}, "did not arrive"),
    (jpeg_bytes()[:200], "could not be decoded"),
])
def test_bad_frames_raise_a_clear_error(payload, message):
    with pytest.raises(ImageInputError, match=message):
        frame_image(payload)


def test_frame_id_tells_frames_apart():
    a, b = data_url(jpeg_bytes()), data_url(jpeg_bytes(colour=(0, 255, 0)))
    assert frame_id(a) == frame_id(dict(a)) != frame_id(b) and len(frame_id(a)) == 8


def test_rate_meter_counts_updates_per_second_per_session():
    m = RateMeter(window=2.0)
    rates = [m.tick("a", now=t / 10) for t in range(30)]  # 10 per second for 3 s
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(10.0)
    assert m.tick("b", now=2.95) == 0.0  # another session starts from nothing
    assert m.tick("a", now=10.0) == 0.0  # after a pause the old ticks have left the window


def test_live_predictions_run_every_model(trained_cnn):
    clf = load_classifier(trained_cnn[0])
    tops, ms = live_predictions({"a": clf, "b": clf}, data_url(jpeg_bytes()))
    assert set(tops) == {"a", "b"} and ms > 0
    for top in tops.values():
        assert len(top) == 5 and all(" " not in k or "_" not in k for k in top)
        assert list(top.values()) == sorted(top.values(), reverse=True)
    expected = clf.predict([frame_image(data_url(jpeg_bytes()))])[0]
    assert [k.replace(" ", "_") for k in tops["a"]] == [c for c, _ in expected]
