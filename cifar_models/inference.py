"""Load a checkpoint and classify PIL images of any size and mode.

Preprocessing mirrors training exactly: the photo becomes a 32x32 uint8 image like a CIFAR-100
picture (centre square, antialiased downscale), then `to_model_input` applies the input size,
interpolation and normalisation stored in the checkpoint.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

from .checkpoint import load_weights
from .common.meta import CheckpointError, checkpoint_paths, meta_problems, read_meta
from .data import to_model_input
from .models import build_model, count_params, get_entry


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB, upright. Transparency is composited on white; 16-bit and float
    greyscale are scaled to 8 bits rather than clipped."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and a.max(initial=0) > 255):
            a = a / 257.0
        elif img.mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255.0
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def to_cifar_uint8(img: Image.Image, size: int = 32) -> torch.Tensor:
    """PIL image -> (3, size, size) uint8: the largest centred square, brought to size x size.

    Downscaling averages each output pixel's whole footprint (box filter, i.e. area averaging). On
    photo-like validation images (upscaled and JPEG-compressed, see photo.py) it lost the least of the
    Pillow filters tried for cnn9 (2,500 images: box 3.4 points against the 32 px originals, Lanczos 3.6,
    bicubic 5.6), and it is the operation the training recipes' photo round trip
    (`data.photo_round_trip`) mimics. Smaller images are upscaled with bicubic interpolation."""
    img = to_rgb(img)
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    method = Image.Resampling.BOX if s >= size else Image.Resampling.BICUBIC
    img = img.resize((size, size), method, box=box)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def forward_logits(model: torch.nn.Module, x: torch.Tensor, data_cfg: dict) -> torch.Tensor:
    """The network's logits for normalised input x. With `flip_average` in the checkpoint's data config (a
    test-time augmentation, twice the compute), the mean of the logits of x and of its mirror image."""
    logits = model(x)
    if data_cfg.get("flip_average"):
        logits = (logits + model(x.flip(3))) / 2
    return logits


class Classifier:
    """A trained model plus everything needed to use it, read from its checkpoint JSON."""

    def __init__(self, model: torch.nn.Module, meta: dict, device="cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meta = meta
        self.name = meta["model"]  # the registry model it is (cnn9, efficientnet_b0, timm:...)
        self.checkpoint = meta.get("name") or self.name  # the checkpoint's own name (its file name once loaded)
        self.classes: list[str] = meta["class_names"]
        self.superclasses: list[str] = meta["superclass_names"]
        self.superclass_of: list[int] = meta["superclass_of"]
        self.data_config: dict = meta["data_config"]
        self.num_params = count_params(model)
        # Temperature scaling fitted on the validation split (scripts/evaluate.py); 1.0 = raw.
        self.temperature = float((meta.get("calibration") or {}).get("temperature", 1.0))

    @property
    def entry_title(self) -> str:  # how the dashboard names the model (catalog.title)
        return get_entry(self.name).title

    @property
    def color(self) -> str:
        return get_entry(self.name).color

    def superclass(self, class_name: str) -> str:
        return self.superclasses[self.superclass_of[self.classes.index(class_name)]]

    def preprocess(self, images) -> torch.Tensor:
        size = int(self.data_config.get("source_size", 32))
        return torch.stack([to_cifar_uint8(im, size) for im in images])

    @torch.inference_mode()
    def logits(self, images_uint8: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
        """Logits (N, classes) float32 on CPU for uint8 (N, 3, 32, 32) images."""
        out = []
        for i in range(0, len(images_uint8), batch_size):
            x = to_model_input(images_uint8[i:i + batch_size].to(self.device), self.data_config)
            out.append(forward_logits(self.model, x, self.data_config).float().cpu())
        return torch.cat(out) if out else torch.empty(0, len(self.classes))

    def proba(self, images_uint8: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        """Class probabilities of preprocessed images; calibrated=False gives the raw softmax."""
        return self.logits(images_uint8).div(self.temperature if calibrated else 1.0).softmax(1)

    def top_k(self, images_uint8: torch.Tensor, k: int = 5, calibrated: bool = True) -> list[list[tuple[str, float]]]:
        """Per preprocessed image, the top-k (class_name, probability) pairs, most probable first."""
        p, i = self.proba(images_uint8, calibrated).topk(k, dim=1)
        return [[(self.classes[c], float(q)) for q, c in zip(ps.tolist(), cs.tolist())] for ps, cs in zip(p, i)]

    def predict_proba(self, images, calibrated: bool = True) -> torch.Tensor:
        """Class probabilities of PIL images; calibrated=False gives the raw softmax (no temperature)."""
        return self.proba(self.preprocess(images), calibrated)

    def predict(self, images, k: int = 5, calibrated: bool = True) -> list[list[tuple[str, float]]]:
        """Per PIL image, the top-k (class_name, probability) pairs, most probable first."""
        return self.top_k(self.preprocess(images), k, calibrated)


def classifier_from_state(meta: dict, state: dict, device="cpu") -> Classifier:
    model, _ = build_model(meta["model"], meta["arch"], pretrained=None, num_classes=len(meta["class_names"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return Classifier(model.to(memory_format=torch.channels_last), meta, device)


def checked_meta(path) -> dict:
    """The JSON of checkpoint `path`, checked as `load_classifier` checks it before building anything from it
    (CheckpointError with the reason otherwise); the weights are not read."""
    _, js = checkpoint_paths(path)
    meta = read_meta(path)
    problems = meta_problems(meta)
    if problems:
        raise CheckpointError(f"{js} is not a usable checkpoint description: " + "; ".join(problems) +
                              ". Restore it from git or train again.")
    return meta


def load_classifier(path, device="cpu") -> Classifier:
    """Load 'checkpoints/NAME' (or NAME.safetensors / NAME.json). Raises CheckpointError with the
    file's name and what to do when it is missing, damaged or mismatched. Weights are only ever read
    from the safetensors file (never pickle); the JSON is checked before anything is built from it."""
    weights, js = checkpoint_paths(path)
    meta = checked_meta(path)
    state = load_weights(path, meta)
    try:
        clf = classifier_from_state(meta, state, device)
        clf.checkpoint = js.stem
        return clf
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{weights} does not fit the model described in {js} ({str(e).splitlines()[0]}). "
                              f"Restore both from git or train again.") from None
