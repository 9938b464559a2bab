"""Grad-CAM heat maps (Selvaraju et al. 2017) for a Classifier, via the `pytorch_grad_cam` library.

The CAM is computed on exactly the model input inference uses (centre square -> 32x32 uint8 ->
`to_model_input`), then mapped back onto the original image: it covers the centred square crop,
and is zero outside it.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from .data import to_model_input
from .inference import Classifier, to_rgb


def target_layers(clf: Classifier) -> list[torch.nn.Module]:
    """The layer whose activations and gradients Grad-CAM weighs: the last spatial feature map."""
    if clf.name == "efficientnet_b0":
        # timm's conv_head: the last 1x1 conv, 1280 channels at 7x7 for 224 input. It is the last
        # spatial feature map before global pooling, so the semantically strongest one.
        return [clf.model.conv_head]
    if clf.name == "cnn9":
        # The last Residual block: a 4x4 map at 32 px input. Coarse, but it is the last spatial layer
        # before the global max-pool; earlier layers are finer but much less class-specific.
        return [clf.model.features[-1]]
    raise ValueError(f"no Grad-CAM target layer known for model {clf.name!r}")


def _crop_box(w: int, h: int) -> tuple[int, int, int]:
    """(left, top, side) of the largest centred square: the region `to_cifar_uint8` keeps."""
    s = min(w, h)
    return (w - s) // 2, (h - s) // 2, s


def gradcam(clf: Classifier, image: Image.Image, class_index: int | None = None) -> np.ndarray:
    """float32 (H, W) heat map in [0, 1] at the upright image's size, for class_index (default top-1)."""
    if class_index is not None and not 0 <= int(class_index) < len(clf.classes):
        raise ValueError(f"class_index {class_index} out of range 0..{len(clf.classes) - 1}")
    model, layers = clf.model, target_layers(clf)
    params = list(model.parameters())
    modes = [m.training for m in model.modules()]
    flags, grads = [p.requires_grad for p in params], [p.grad for p in params]
    own = [p for layer in layers for p in layer.parameters()]
    targets = None if class_index is None else [ClassifierOutputTarget(int(class_index))]
    cam = GradCAM(model, layers)  # registers forward hooks; released in `finally`
    try:
        # Only the gradient at the target layer is needed: let autograd start there (its own weights
        # require grad, nothing before it does), so backward stops at that layer instead of running
        # through the whole backbone. A layer without weights falls back to the input's gradient.
        for p in params:
            p.requires_grad_(False)
        for p in own:
            p.requires_grad_(True)
        # Also works when called inside inference_mode / no_grad (e.g. from a UI callback).
        with torch.inference_mode(False), torch.enable_grad():
            x = to_model_input(clf.preprocess([image]).to(clf.device), clf.data_config)
            heat = cam(x.requires_grad_(not own), targets)[0]  # (S, S) in [0, 1], S = input size
    finally:
        # Explicit release rather than `with GradCAM(...)`: its __exit__ swallows IndexError.
        cam.activations_and_grads.release()
        for p, f, g in zip(params, flags, grads):  # GradCAM zeroes .grad; put everything back
            p.requires_grad_(f)
            p.grad = g
        for m, t in zip(model.modules(), modes):  # GradCAM calls model.eval(); restore each module
            m.training = t
    w, h = to_rgb(image).size
    left, top, s = _crop_box(w, h)
    out = np.zeros((h, w), dtype=np.float32)
    out[top:top + s, left:left + s] = cv2.resize(np.float32(heat), (s, s), interpolation=cv2.INTER_LINEAR)
    return np.nan_to_num(out).clip(0, 1)


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = 0.45, max_side: int = 512) -> Image.Image:
    """RGB image: the jet-coloured heat map blended on the upright image with weight alpha. Images
    larger than max_side on the long side are downscaled first (the map is coarse anyway)."""
    img = to_rgb(image)
    w, h = img.size
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    if cam.shape != (img.height, img.width):
        cam = cv2.resize(np.float32(cam), img.size, interpolation=cv2.INTER_AREA)
    rgb = np.asarray(img, dtype=np.float32) / 255
    mask = np.nan_to_num(np.float32(cam)).clip(0, 1)
    return Image.fromarray(show_cam_on_image(rgb, mask, use_rgb=True, image_weight=1 - alpha), "RGB")
