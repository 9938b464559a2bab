import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cifar_models import load_classifier
from cifar_models.explain import gradcam, overlay, target_layers
from cifar_models.data import to_model_input
from cifar_models.inference import Classifier
from cifar_models.models import build_model, get_entry


@pytest.fixture(scope="module")
def cnn(trained_cnn):
    return load_classifier(trained_cnn[0])


@pytest.fixture(scope="module")
def effnet(cnn):
    torch.manual_seed(0)
    model, _ = build_model("efficientnet_b0")  # random init: no download
    data_config = dict(get_entry("efficientnet_b0").data_config, source_size=32)
    meta = dict(model="efficientnet_b0", class_names=cnn.classes, superclass_names=cnn.superclasses,
                superclass_of=cnn.superclass_of, data_config=data_config)
    return Classifier(model.to(memory_format=torch.channels_last), meta)


@pytest.fixture(params=["cnn", "effnet"])
def clf(request):
    return request.getfixturevalue(request.param)


def _photo(w=60, h=40, seed=0):
    return Image.effect_noise((w, h), 80).convert("RGB").rotate(seed * 40)


def _exif_rotated_jpeg():
    """Stored 60x40, displayed (EXIF orientation 6: rotate 90 CW) as 40 wide x 60 high."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    _photo().save(buf, "JPEG", exif=exif)
    return Image.open(io.BytesIO(buf.getvalue()))


def _state(clf):
    model = clf.model
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()))


def test_target_layers(cnn, effnet):
    assert target_layers(cnn) == [cnn.model.features[-1]]
    assert target_layers(effnet) == [effnet.model.conv_head]


def test_map_has_image_size_and_is_zero_outside_the_crop(clf):
    cam = gradcam(clf, _photo())
    assert cam.shape == (40, 60) and cam.dtype == np.float32
    assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    assert (cam[:, :10] == 0).all() and (cam[:, 50:] == 0).all()  # the centred 40x40 crop is [10, 50)

    cam = gradcam(clf, _exif_rotated_jpeg())
    assert cam.shape == (60, 40)  # upright (after EXIF) size: H=60, W=40
    assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    assert (cam[:10] == 0).all() and (cam[50:] == 0).all()


def test_same_map_as_the_library_default(clf):
    # gradcam() lets backward start at the target layer; the map must equal plain GradCAM's.
    img, c = _photo(64, 64, seed=2), 3
    x = to_model_input(clf.preprocess([img]), clf.data_config)
    with GradCAM(clf.model, target_layers(clf)) as g:
        ref = cv2.resize(g(x, [ClassifierOutputTarget(c)])[0], (64, 64))
    clf.model.zero_grad(set_to_none=True)
    np.testing.assert_allclose(gradcam(clf, img, c), ref, atol=1e-6)


def test_other_class_and_bad_index(clf):
    img = _photo(seed=1)
    top = int(clf.logits(clf.preprocess([img])).argmax())
    other = (top + 37) % len(clf.classes)
    assert np.array_equal(gradcam(clf, img), gradcam(clf, img, top))
    cam = gradcam(clf, img, other)
    assert cam.shape == (40, 60) and np.isfinite(cam).all() and 0 <= cam.min() <= cam.max() <= 1
    with pytest.raises(ValueError):
        gradcam(clf, img, len(clf.classes))


def test_model_is_left_untouched(clf):
    images = [_photo(seed=s) for s in range(3)]
    before_logits, before_pred, before_state = clf.logits(clf.preprocess(images)), clf.predict(images), _state(clf)
    for im in images:
        gradcam(clf, im)
    assert _state(clf) == before_state and not clf.model.training
    assert all(p.grad is None for p in clf.model.parameters())
    assert torch.equal(clf.logits(clf.preprocess(images)), before_logits)
    assert clf.predict(images) == before_pred


def test_works_inside_inference_mode_and_keeps_train_mode(cnn):
    with torch.inference_mode():
        assert gradcam(cnn, _photo()).shape == (40, 60)
    cnn.model.train()
    try:
        gradcam(cnn, _photo())
        assert all(m.training for m in cnn.model.modules())
    finally:
        cnn.model.eval()


def test_overlay(cnn):
    img = _exif_rotated_jpeg()
    out = overlay(img, gradcam(cnn, img))
    assert out.mode == "RGB" and out.size == (40, 60)
    big = Image.new("RGB", (2000, 1000), (90, 60, 30))
    out = overlay(big, gradcam(cnn, big))
    assert out.mode == "RGB" and out.size == (512, 256)
