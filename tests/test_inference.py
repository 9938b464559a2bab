import io

import numpy as np
import pytest
from PIL import Image

from cifar_models import load_classifier
from cifar_models.inference import to_cifar_uint8, to_rgb


def _images():
    rgb = Image.effect_noise((50, 40), 60).convert("RGB")
    cmyk = rgb.convert("CMYK")
    rgba = rgb.convert("RGBA")
    grey = rgb.convert("L")
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    i16 = Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16))
    return {"RGB": rgb, "RGBA": rgba, "L": grey, "P": pal, "CMYK": cmyk, "I;16": i16,
            "1x1": Image.new("RGB", (1, 1), (10, 200, 10)), "4000x3000": Image.new("RGB", (4000, 3000), (90, 60, 30))}


@pytest.fixture(scope="module")
def clf(trained_cnn):
    return load_classifier(trained_cnn[0])


@pytest.mark.parametrize("kind", list(_images()))
def test_predict_any_mode_and_size(clf, kind):
    img = _images()[kind]
    (top,) = clf.predict([img], k=5)
    assert len(top) == 5
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert all(name in clf.classes for name, _ in top)


def test_batch_of_mixed_images(clf):
    out = clf.predict(list(_images().values()), k=3)
    assert len(out) == 8 and all(len(t) == 3 for t in out)


def test_16_bit_is_scaled_not_clipped():
    img = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert img.mode.startswith("I;16")
    assert to_rgb(img).getpixel((0, 0)) == (255, 255, 255)
    half = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert 126 <= to_rgb(half).getpixel((0, 0))[0] <= 129


def test_transparency_becomes_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert to_rgb(img).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (60, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 30, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    shown = to_rgb(Image.open(io.BytesIO(buf.getvalue())))
    assert shown.size == (20, 60)
    assert shown.getpixel((10, 5))[0] > 200 and shown.getpixel((10, 55))[0] < 50  # white on top


def test_cifar_preprocessing_keeps_a_32px_image_unchanged():
    arr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = to_cifar_uint8(Image.fromarray(arr))
    assert out.shape == (3, 32, 32) and (out.permute(1, 2, 0).numpy() == arr).all()


def test_superclass_lookup(clf):
    assert clf.superclass("class_07") == "super_01"


def _copy_checkpoint(trained_cnn, folder, **changes):
    import json
    import shutil

    src = trained_cnn[0]
    shutil.copy(src.with_name("cnn9.safetensors"), folder / "cnn9.safetensors")
    meta = json.loads(src.with_name("cnn9.json").read_text())
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            meta[outer][inner] = value
        else:
            meta[key] = value
    (folder / "cnn9.json").write_text(json.dumps(meta))
    return folder / "cnn9"


@pytest.mark.parametrize("changes, message", [
    ({"model": "resnet_from_the_internet"}, "'model' is 'resnet_from_the_internet'"),
    ({"class_names": "apple"}, "'class_names' must be a list"),
    ({"superclass_of": [99] * 100}, "'superclass_of' must give"),
    ({"data_config.mean": [0.5, 0.5]}, "'data_config.mean' and 'std'"),
    ({"data_config.input_size": "32"}, "'data_config.input_size'"),
    ({"data_config.flip_average": "yes"}, "'data_config.flip_average' must be true or false"),
    ({"calibration": {"temperature": -1}}, "'calibration.temperature'"),
    ({"arch": {"widths": [8, 16, 32, 128]}}, "does not fit the model"),
])
def test_checkpoint_json_is_validated_with_a_clear_error(trained_cnn, tmp_path, changes, message):
    from cifar_models.checkpoint import CheckpointError

    path = _copy_checkpoint(trained_cnn, tmp_path, **changes)
    with pytest.raises(CheckpointError) as e:
        load_classifier(path)
    assert message in str(e.value) and "cnn9." in str(e.value)
    assert load_classifier(_copy_checkpoint(trained_cnn, tmp_path)).predict([_images()["RGB"]])  # the intact copy loads


def test_weights_come_only_from_safetensors(trained_cnn, tmp_path):
    import pickle

    from cifar_models.checkpoint import CheckpointError

    path = _copy_checkpoint(trained_cnn, tmp_path)
    (tmp_path / "cnn9.safetensors").write_bytes(pickle.dumps({"not": "weights"}))  # a pickle in its place
    with pytest.raises(CheckpointError, match="sha256 differs|not a readable safetensors"):
        load_classifier(path)
    with pytest.raises(CheckpointError):
        load_classifier(tmp_path / "cnn9.pt")  # any other name still means NAME.safetensors + NAME.json


def test_flip_average_in_the_data_config_averages_image_and_mirror(trained_cnn, tmp_path):
    """A checkpoint whose data config says flip_average predicts the mean logits of the image and its mirror: in
    PyTorch, on its card, and in its ONNX export."""
    import torch

    (tmp_path / "plain").mkdir()
    plain = load_classifier(_copy_checkpoint(trained_cnn, tmp_path / "plain", **{"data_config.flip_average": False}))
    flipped = load_classifier(_copy_checkpoint(trained_cnn, tmp_path, **{"data_config.flip_average": True}))
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    expected = (plain.logits(x) + plain.logits(x.flip(3))) / 2
    assert torch.allclose(flipped.logits(x), expected, atol=1e-5)
    assert not torch.allclose(plain.logits(x), expected, atol=1e-3)
    from cifar_models.common.meta import model_card

    assert "its mirror image: predictions average both" in model_card(flipped)
    assert "mirror" not in model_card(plain)
    ort = pytest.importorskip("onnxruntime")
    from cifar_models.export import export_onnx

    path = export_onnx(flipped, tmp_path / "flip.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"images": x.permute(0, 2, 3, 1).numpy()})[0]
    assert np.allclose(probs, flipped.proba(x).numpy(), atol=1e-5)
