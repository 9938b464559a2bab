"""The corruptions: deterministic per seed, shape- and dtype-preserving, growing with severity."""
import colorsys

import numpy as np
import pytest
import torch

from cifar_models.eval.corruptions import (CORRUPTIONS, PARAMS, SEVERITIES, apply_corruptions, brightness, corrupt,
                                      describe, generator_for)


@pytest.fixture(scope="module")
def images():
    """A textured CIFAR-sized batch: smooth colour gradients plus fixed noise, and one black image."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    base = torch.stack([xx, yy, 1 - xx * yy])[None] * 200 + torch.rand(16, 3, 32, 32, generator=g) * 55
    batch = base.round().clamp(0, 255).to(torch.uint8)
    batch[-1] = 0
    return batch


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_severity_is_deterministic_and_keeps_shape_and_dtype(images, name):
    before = images.clone()
    distances = []
    for s in SEVERITIES:
        out = corrupt(images, name, s, seed=3)
        assert out.shape == images.shape and out.dtype == torch.uint8 and out.device == images.device
        assert torch.equal(out, corrupt(images, name, s, seed=3)), (name, s)
        # the function itself is pure: an explicit generator with the same state gives the same batch
        assert torch.equal(out, CORRUPTIONS[name](images, s, generator_for(3, name)))
        distances.append((out.float() - images.float()).abs().mean().item())
    assert distances[0] > 0, f"{name} at severity 1 does not change the images"
    assert distances[-1] > distances[0], f"{name}: severity 5 is not stronger than severity 1 {distances}"
    assert torch.equal(images, before)  # the input was not modified in place


@pytest.mark.parametrize("name", ["rotation", "occlusion", "gaussian_noise"])
def test_random_corruptions_follow_the_seed(images, name):
    assert not torch.equal(corrupt(images, name, 3, seed=0), corrupt(images, name, 3, seed=1))


def test_single_images_and_empty_batches(images):
    for name in CORRUPTIONS:
        assert corrupt(images[:1], name, 2).shape == (1, 3, 32, 32)
        assert corrupt(images[:0], name, 2).shape == (0, 3, 32, 32)


def test_bad_arguments_are_refused(images):
    with pytest.raises(ValueError, match="severity"):
        corrupt(images, "jpeg", 6)
    with pytest.raises(ValueError, match="severity"):
        corrupt(images, "jpeg", 0)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(images.float(), "jpeg", 1)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(images, "fog", 1)
    with pytest.raises(ValueError, match="unknown corruption"):
        apply_corruptions(images, {"fog": 1})


def test_brightness_adds_to_the_hsv_value_like_cifar_c(images):
    """Against an independent per-pixel reference: colorsys HSV, value + c, clipped, back to RGB."""
    out = brightness(images[[0, -1]], 4)
    c = PARAMS["brightness"][3]
    for img, res in zip(images[[0, -1]], out):
        for y, x in ((0, 0), (5, 17), (31, 31)):
            h, s, v = colorsys.rgb_to_hsv(*(img[:, y, x].double() / 255).tolist())
            ref = np.array(colorsys.hsv_to_rgb(h, s, min(v + c, 1.0))) * 255
            assert np.abs(res[:, y, x].numpy().astype(float) - ref).max() <= 1.0


def test_occlusion_covers_the_stated_area(images):
    for s in SEVERITIES:
        out = corrupt(images[:-1], "occlusion", s)
        side = round(PARAMS["occlusion"][s - 1] * 32)
        grey = (out == 128).all(1)  # (n, h, w): pixels set to the fill in every channel
        assert (grey.sum((1, 2)) >= side * side).all()


def test_composition_matches_single_corruptions_and_zero_means_off(images):
    assert torch.equal(apply_corruptions(images, {"gaussian_blur": 2}, seed=5), corrupt(images, "gaussian_blur", 2, 5))
    assert torch.equal(apply_corruptions(images, {n: 0 for n in CORRUPTIONS}), images)
    both = apply_corruptions(images, {"occlusion": 3, "gaussian_noise": 2}, seed=5)
    assert torch.equal(both, corrupt(corrupt(images, "occlusion", 3, 5), "gaussian_noise", 2, 5))


def test_descriptions_name_the_parameter():
    assert describe("jpeg", 5) == "JPEG compression, severity 5 (quality 40)"
    assert all(describe(n, s) for n in CORRUPTIONS for s in SEVERITIES)
