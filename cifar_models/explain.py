"""Grad-CAM heat maps (Selvaraju et al. 2017) for a Classifier, computed directly from the model's
two halves, with no hooks and no extra library.

Every model in the registry splits as timm's do: `forward_features(x)` gives the last spatial
feature map A (N, C, h, w) and `forward_head(A)` the logits. Grad-CAM for class c is

    w_k = mean over space of d logit_c / d A_k,      cam = relu(sum_k w_k A_k),  scaled to [0, 1]

The features are computed once without a graph; autograd then only runs through the head, and only
towards a fresh copy of A (`torch.autograd.grad`), never towards the weights. Nothing about the
shared model changes (no hooks, no requires_grad flags, no .grad, no train/eval switch), so heat
maps and predictions can run on the same model at the same time.

The CAM is computed on exactly the model input inference uses (centre square -> 32x32 uint8 ->
`to_model_input`), then mapped back onto the original image: it covers the centred square crop,
and is zero outside it.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .data import to_model_input
from .inference import Classifier, to_rgb
from .models import explain_split


def _crop_box(w: int, h: int) -> tuple[int, int, int]:
    """(left, top, side) of the largest centred square: the region `to_cifar_uint8` keeps."""
    s = min(w, h)
    return (w - s) // 2, (h - s) // 2, s


def _resize_map(cam: np.ndarray, size: tuple[int, int], resample=Image.Resampling.BILINEAR) -> np.ndarray:
    """A float32 (h, w) map resized to size=(W, H) with Pillow (mode 'F')."""
    return np.asarray(Image.fromarray(np.float32(cam), "F").resize(size, resample), dtype=np.float32)


def class_activation(model: torch.nn.Module, x: torch.Tensor, class_index: int | None = None,
                     split=None) -> tuple[np.ndarray, int]:
    """Grad-CAM of one model input x (1, 3, S, S) at the feature map's resolution, in [0, 1], and the class
    it explains (class_index, or the top-1 when None). The model must be in eval mode; it is not modified.
    split: (features, head) from the model's registry entry (default: forward_features / forward_head)."""
    forward_features, forward_head = split or (model.forward_features, model.forward_head)
    if model.training:
        raise ValueError("Grad-CAM needs the model in eval mode (train-mode batch norm would update its statistics)")
    with torch.inference_mode(False), torch.enable_grad():
        x = x.clone()  # an inference-mode tensor cannot take part in autograd
        with torch.no_grad():
            features = forward_features(x)
        a = features.detach().clone().requires_grad_(True)  # the only leaf autograd differentiates towards
        logits = forward_head(a)
        c = int(logits[0].argmax()) if class_index is None else int(class_index)
        (grad,) = torch.autograd.grad(logits[0, c], a)
    weights = grad.float().mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    cam = torch.relu((weights * a.detach().float()).sum(1))[0]  # (h, w)
    cam = cam - cam.min()
    top = float(cam.max())
    cam = cam / top if top > 0 else cam
    return cam.cpu().numpy().astype(np.float32), c


def gradcam(clf: Classifier, image: Image.Image, class_index: int | None = None) -> np.ndarray:
    """float32 (H, W) heat map in [0, 1] at the upright image's size, for class_index (default top-1)."""
    if class_index is not None and not 0 <= int(class_index) < len(clf.classes):
        raise ValueError(f"class_index {class_index} out of range 0..{len(clf.classes) - 1}")
    with torch.inference_mode(False):
        x = to_model_input(clf.preprocess([image]).to(clf.device), clf.data_config)
    heat, _ = class_activation(clf.model, x, class_index, explain_split(clf.name, clf.model))
    w, h = to_rgb(image).size
    left, top, s = _crop_box(w, h)
    out = np.zeros((h, w), dtype=np.float32)
    out[top:top + s, left:left + s] = _resize_map(heat, (s, s))
    return np.nan_to_num(out).clip(0, 1)


def _jet_lut() -> np.ndarray:
    """(256, 3) uint8: the classic 'jet' colour map (blue -> cyan -> yellow -> red), as piecewise-linear ramps."""
    v = np.linspace(0, 1, 256)[:, None]
    rgb = np.clip(1.5 - np.abs(4 * v - np.array([3, 2, 1])), 0, 1)
    return np.uint8(np.round(rgb * 255))


JET = _jet_lut()


def colorize(cam: np.ndarray) -> np.ndarray:
    """(H, W) map in [0, 1] -> (H, W, 3) uint8 jet colours."""
    return JET[np.uint8(np.round(np.nan_to_num(np.float32(cam)).clip(0, 1) * 255))]


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = 0.45, max_side: int = 512) -> Image.Image:
    """RGB image: the jet-coloured heat map blended on the upright image with weight alpha. Images
    larger than max_side on the long side are downscaled first (the map is coarse anyway)."""
    img = to_rgb(image)
    w, h = img.size
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    if cam.shape != (img.height, img.width):
        cam = _resize_map(cam, img.size, Image.Resampling.BOX if cam.shape[1] > img.width else Image.Resampling.BILINEAR)
    rgb = np.asarray(img, dtype=np.float32)
    out = (1 - alpha) * rgb + alpha * colorize(cam).astype(np.float32)
    return Image.fromarray(np.uint8(np.round(out.clip(0, 255))), "RGB")


def heat_map(clf: Classifier, image: Image.Image, class_name: str, min_side: int = 256) -> Image.Image:
    """Grad-CAM of `class_name` overlaid on the image (the dashboard's heat map), at least `min_side` px so
    that small images stay visible."""
    out = overlay(image, gradcam(clf, image, clf.classes.index(class_name)))
    if min(out.size) < min_side:
        scale = min_side / min(out.size)
        out = out.resize((round(out.width * scale), round(out.height * scale)), Image.Resampling.BICUBIC)
    return out
