"""Photo-like test images: what a phone or a browser hands the app instead of a 32x32 tile.

Each 32x32 image is upscaled (bicubic) to a square of one of `SIZES` and re-compressed as a JPEG of
one of `QUALITIES`; the pair is drawn per image from a seeded generator, so every run sees the same
photos. `photo_report` runs a classifier on them beside the 32 px originals and reports the drop,
overall and per size and quality.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

SIZES = (64, 128, 256, 512, 1024)
QUALITIES = (95, 85, 75, 60)


def photo_settings(n: int, seed: int = 0) -> list[tuple[int, int]]:
    """The (size, JPEG quality) of each of n images, drawn from a seeded generator."""
    rng = np.random.default_rng(seed)
    return [(SIZES[s], QUALITIES[q]) for s, q in zip(rng.integers(len(SIZES), size=n), rng.integers(len(QUALITIES), size=n))]


def photo_like(image: torch.Tensor, size: int, quality: int) -> Image.Image:
    """uint8 (3, 32, 32) -> a size x size JPEG photo of it (bicubic upscale, then JPEG at `quality`), decoded."""
    img = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def photo_inputs(images: torch.Tensor, preprocess, seed: int = 0, desc: str = "photo-like images",
                 progress: bool = True):
    """(uint8 model-side images of the photos, their settings): each photo made, then brought down exactly as
    the app brings down an upload (`preprocess`, a Classifier's)."""
    settings = photo_settings(len(images), seed)
    bar = tqdm(images, desc=desc, unit="img", disable=not progress)
    out = [preprocess([photo_like(im, s, q)])[0] for im, (s, q) in zip(bar, settings)]
    return torch.stack(out), settings


def photo_report(clf, images: torch.Tensor, labels: torch.Tensor, seed: int = 0, batch_size: int = 250,
                 progress: bool = True) -> dict:
    """Top-1 on the 32 px originals and on their photo-like versions, the drop, and the top-1 per size/quality."""
    photos, settings = photo_inputs(images, clf.preprocess, seed, progress=progress)
    labels = labels.cpu()
    clean = clf.logits(images, batch_size).argmax(1) == labels
    photo = clf.logits(photos, batch_size).argmax(1) == labels
    sizes = torch.tensor([s for s, _ in settings])
    quality = torch.tensor([q for _, q in settings])
    return dict(
        images=len(labels), seed=seed, sizes=list(SIZES), qualities=list(QUALITIES),
        top1_32px=float(clean.float().mean()), top1_photo=float(photo.float().mean()),
        drop=float(clean.float().mean() - photo.float().mean()),
        by_size={str(s): dict(images=int((sizes == s).sum()), top1_photo=float(photo[sizes == s].float().mean()),
                              top1_32px=float(clean[sizes == s].float().mean())) for s in SIZES},
        by_quality={str(q): dict(images=int((quality == q).sum()), top1_photo=float(photo[quality == q].float().mean()),
                                 top1_32px=float(clean[quality == q].float().mean())) for q in QUALITIES},
    )
