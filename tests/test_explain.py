import copy
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_models import load_classifier
from cifar_models.explain import JET, class_activation, colorize, gradcam, overlay
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


@pytest.fixture(params=["cnn", pytest.param("effnet", marks=pytest.mark.slow)])  # effnet: 224 px, seconds each
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
            [p.grad for p in model.parameters()],
            sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()))


def _weights(clf):
    return [t.clone() for t in clf.model.state_dict().values()]


def test_the_split_is_the_model(clf):
    # Grad-CAM relies on forward_head(forward_features(x)) being the model, and on a spatial feature map.
    x = to_model_input(clf.preprocess([_photo(seed=3), _photo(seed=4)]), clf.data_config)
    with torch.inference_mode():
        features = clf.model.forward_features(x)
        assert features.ndim == 4 and features.shape[-1] > 1
        torch.testing.assert_close(clf.model.forward_head(features), clf.model(x))


def test_map_has_image_size_and_is_zero_outside_the_crop(clf):
    cam = gradcam(clf, _photo())
    assert cam.shape == (40, 60) and cam.dtype == np.float32
    assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    assert (cam[:, :10] == 0).all() and (cam[:, 50:] == 0).all()  # the centred 40x40 crop is [10, 50)

    cam = gradcam(clf, _exif_rotated_jpeg())
    assert cam.shape == (60, 40)  # upright (after EXIF) size: H=60, W=40
    assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    assert (cam[:10] == 0).all() and (cam[50:] == 0).all()


def test_same_map_as_plain_backward_through_a_copy(clf):
    # Reference: the textbook computation on a private copy of the model, with ordinary backward
    # through every layer and the feature map's gradient read from .grad.
    img, c = _photo(64, 64, seed=2), 3
    x = to_model_input(clf.preprocess([img]), clf.data_config)
    model = copy.deepcopy(clf.model).eval()
    with torch.enable_grad():
        a = model.forward_features(x)
        a.retain_grad()
        model.forward_head(a)[0, c].backward()
    w = a.grad.mean(dim=(2, 3), keepdim=True)
    ref = torch.relu((w * a).sum(1))[0].detach()
    ref = ((ref - ref.min()) / (ref - ref.min()).max()).numpy()
    heat, cls = class_activation(clf.model, x, c)
    assert cls == c and heat.shape == ref.shape
    np.testing.assert_allclose(heat, ref, atol=1e-5)


def test_bright_where_the_object_is(cnn):
    # The fixture's classes are colours: a picture half one class's colour, half another's. Each class's
    # map must be brighter on its own half (this fails for a map that ignores the class or the image).
    bright = {}
    for c, d in ((0, 1), (10, 50)):
        colour = {k: _class_colour(cnn, k) for k in (c, d)}
        for left, right in ((c, d), (d, c)):
            img = np.zeros((64, 64, 3), np.uint8)
            img[:, :32], img[:, 32:] = colour[left], colour[right]
            cam = gradcam(cnn, Image.fromarray(img), left)
            bright[(c, d, left)] = cam[:, :32].mean() - cam[:, 32:].mean()
    assert all(v > 0.05 for v in bright.values()), bright


def _class_colour(clf, k):
    """The colour the tiny fixture model scores highest for class k (searched over a coarse RGB grid)."""
    grid = np.array([(r, g, b) for r in range(0, 256, 32) for g in range(0, 256, 32) for b in range(0, 256, 32)], np.uint8)
    x = torch.from_numpy(grid).view(-1, 3, 1, 1).expand(-1, 3, 32, 32).contiguous()
    with torch.inference_mode():
        scores = clf.logits(x).log_softmax(1)[:, k]
    return grid[int(scores.argmax())]


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
    before_weights = _weights(clf)
    for im in images:
        gradcam(clf, im)
    assert _state(clf) == before_state and not clf.model.training
    assert all(p.grad is None for p in clf.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before_weights, _weights(clf)))
    assert torch.equal(clf.logits(clf.preprocess(images)), before_logits)
    assert clf.predict(images) == before_pred


def test_works_inside_inference_mode_and_no_grad(cnn):
    img = _photo()
    with torch.inference_mode():
        a = gradcam(cnn, img)
    with torch.no_grad():
        b = gradcam(cnn, img)
    assert a.shape == (40, 60) and np.array_equal(a, b) and np.array_equal(a, gradcam(cnn, img)) and a.max() > 0.5


def test_refuses_a_model_in_train_mode_and_changes_nothing(cnn):
    before = _weights(cnn)
    cnn.model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            gradcam(cnn, _photo())
        assert all(m.training for m in cnn.model.modules())
    finally:
        cnn.model.eval()
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(cnn)))


def test_predictions_during_heat_maps_are_identical(clf):
    # No hooks and no flags on the shared model: predicting while heat maps run gives the same answers.
    images = [_photo(seed=s) for s in range(4)]
    x = clf.preprocess(images)
    expected = clf.logits(x)
    stop, errors, maps = threading.Event(), [], []

    def heat_maps():
        try:
            while not stop.is_set():
                maps.append(gradcam(clf, images[len(maps) % 4]))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=heat_maps) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(15):
            assert torch.equal(clf.logits(x), expected)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors and maps
    assert _state(clf)[3] == 0 and all(p.grad is None for p in clf.model.parameters())


def test_jet_colours():
    assert tuple(JET[0]) == (0, 0, 128) and tuple(JET[255]) == (128, 0, 0)  # dark blue ... dark red
    assert tuple(colorize(np.array([[0.5]]))[0, 0]) == tuple(JET[128])
    assert JET[:, 2].argmax() < JET[:, 1].argmax() < JET[:, 0].argmax()  # blue, then green, then red peaks


def test_overlay(cnn):
    img = _exif_rotated_jpeg()
    out = overlay(img, gradcam(cnn, img))
    assert out.mode == "RGB" and out.size == (40, 60)
    big = Image.new("RGB", (2000, 1000), (90, 60, 30))
    out = overlay(big, gradcam(cnn, big))
    assert out.mode == "RGB" and out.size == (512, 256)
