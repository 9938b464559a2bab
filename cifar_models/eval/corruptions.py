"""Image corruptions at five severities, in the spirit of CIFAR-100-C (Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019).

Every corruption is a pure function over a whole batch:

    fn(images, severity, generator=None) -> images

`images` is uint8 (N, 3, H, W) on any device (the CIFAR-like 32x32 picture the models see:
`Classifier.preprocess` output or a test split); `severity` is 1..5; `generator` (a CPU
`torch.Generator`) is the only source of randomness, so the same input, severity and seed give the
same output bit for bit. The result is uint8 of the same shape on the same device.

`CORRUPTIONS` (name -> fn) is the one list the app's Robustness panel and the corruption
evaluation (`eval/robustness.py`, `scripts/evaluate.py --corruptions`) both iterate, in this
order (which is also the order `apply_corruptions` composes them: geometry, then optics, light,
sensor noise, and compression last, as in a camera).

Severity parameters (`common/corruption_specs.py`: `PARAMS`, index = severity - 1):

| name | what | parameter at severity 1..5 | source |
|---|---|---|---|
| rotation | rotate about the centre, bilinear, black corners; direction random per image | 10, 20, 30, 40, 50 degrees | own choice (not in CIFAR-C) |
| occlusion | a mid-grey square at a random place inside the image | side 20, 30, 40, 50, 60 % of the image side | own choice (Cutout-like) |
| gaussian_blur | Gaussian blur, kernel 2*ceil(4 sigma)+1, reflect padding | sigma 0.4, 0.6, 0.7, 0.8, 1.0 px | CIFAR-10-C gaussian_blur |
| pixelate | box-downscale to c * side, nearest upscale back | c = 0.95, 0.9, 0.85, 0.75, 0.65 | CIFAR-10-C pixelate |
| brightness | add c to the HSV value channel (hue and saturation kept) | c = 0.05, 0.1, 0.15, 0.2, 0.3 | CIFAR-10-C brightness |
| darkness | scale all channels by c (torchvision adjust_brightness) | c = 0.8, 0.65, 0.5, 0.35, 0.2 | own choice (low light) |
| contrast | blend with the image's mean grey (torchvision adjust_contrast) | factor 0.75, 0.5, 0.4, 0.3, 0.15 | CIFAR-10-C contrast values |
| gaussian_noise | add N(0, sigma) per pixel and channel, on the 0-1 scale | sigma 0.04, 0.06, 0.08, 0.09, 0.10 | CIFAR-10-C gaussian_noise |
| jpeg | JPEG encode and decode (torchvision) | quality 80, 65, 58, 50, 40 | CIFAR-10-C jpeg_compression |

Differences from CIFAR-10-C: values are rounded (not truncated) to uint8; contrast blends with
the mean grey (torchvision) rather than each channel's mean; blur pads by reflection.
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from ..common.corruption_specs import NAMES, PARAMS, SEVERITIES, TITLES, UNITS, describe, scale  # noqa: F401

OCCLUSION_FILL = 128  # mid-grey


def _check(images: torch.Tensor, severity: int) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a uint8 (N, 3, H, W) tensor, got "
                         f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")


def _generator(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float on the 0-255 scale -> uint8, rounded and clipped."""
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _tv():
    """torchvision's tensor transforms, imported on first use: importing torchvision costs about a second
    (it imports torch._dynamo), which the dashboard should not pay at start-up for a lab nobody opened."""
    import torchvision.transforms.v2.functional as TF
    return TF


# ----------------------------------------------------------------------------- the corruptions
def rotation(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    _check(images, severity)
    angle = float(PARAMS["rotation"][severity - 1])
    clockwise = torch.rand(len(images), generator=_generator(generator)) < 0.5
    TF = _tv()
    out = images.clone()
    for mask, a in ((clockwise, -angle), (~clockwise, angle)):
        idx = mask.nonzero().flatten().to(images.device)
        if len(idx):
            out[idx] = TF.rotate(images[idx], a, interpolation=TF.InterpolationMode.BILINEAR, fill=0)
    return out


def occlusion(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    _check(images, severity)
    n, _, h, w = images.shape
    side = max(1, round(PARAMS["occlusion"][severity - 1] * min(h, w)))
    g = _generator(generator)
    top = torch.randint(0, h - side + 1, (n,), generator=g)
    left = torch.randint(0, w - side + 1, (n,), generator=g)
    rows, cols = torch.arange(h), torch.arange(w)
    in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + side)      # (n, h)
    in_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + side)    # (n, w)
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None].to(images.device)  # (n, 1, h, w)
    return images.masked_fill(mask, OCCLUSION_FILL)


def gaussian_blur(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    _check(images, severity)
    sigma = float(PARAMS["gaussian_blur"][severity - 1])
    k = 2 * math.ceil(4 * sigma) + 1
    return _tv().gaussian_blur(images, [k, k], [sigma, sigma])


def pixelate(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    _check(images, severity)
    h, w = images.shape[-2:]
    c = PARAMS["pixelate"][severity - 1]
    small = F.interpolate(images.float(), size=(max(1, int(h * c)), max(1, int(w * c))), mode="area")
    return _to_uint8(F.interpolate(small, size=(h, w), mode="nearest"))


def brightness(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """HSV value + c with hue and saturation kept: every pixel's RGB is scaled by min(V + c, 1) / V
    (a black pixel, whose saturation is 0, becomes grey c)."""
    _check(images, severity)
    c = PARAMS["brightness"][severity - 1]
    x = images.float().div_(255)
    v = x.amax(1, keepdim=True)
    new_v = (v + c).clamp_(max=1.0)
    out = torch.where(v > 0, x * (new_v / v.clamp(min=1e-12)), new_v)
    return _to_uint8(out.mul_(255))


def darkness(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    _check(images, severity)
    return _tv().adjust_brightness(images, float(PARAMS["darkness"][severity - 1]))


def contrast(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    _check(images, severity)
    return _tv().adjust_contrast(images, float(PARAMS["contrast"][severity - 1]))


def gaussian_noise(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    _check(images, severity)
    sigma = PARAMS["gaussian_noise"][severity - 1] * 255
    noise = torch.randn(images.shape, generator=_generator(generator)).mul_(sigma).to(images.device)
    return _to_uint8(images.float().add_(noise))


def jpeg(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    _check(images, severity)
    if len(images) == 0:
        return images.clone()
    return _tv().jpeg(images.cpu(), int(PARAMS["jpeg"][severity - 1])).to(images.device)


CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "rotation": rotation,
    "occlusion": occlusion,
    "gaussian_blur": gaussian_blur,
    "pixelate": pixelate,
    "brightness": brightness,
    "darkness": darkness,
    "contrast": contrast,
    "gaussian_noise": gaussian_noise,
    "jpeg": jpeg,
}
assert tuple(CORRUPTIONS) == NAMES


def generator_for(seed: int, name: str) -> torch.Generator:
    """A CPU generator for one corruption, derived from (seed, name) so that each corruption's random
    draws do not depend on which other corruptions are applied, nor on the torch version's hashing."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """One corruption at one severity, seeded: what the evaluation applies to the test images."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name](images, severity, generator_for(seed, name))


def apply_corruptions(images: torch.Tensor, severities: Mapping[str, int], seed: int = 0) -> torch.Tensor:
    """Compose several corruptions (severity 0 or missing = off) in the order of CORRUPTIONS: what the
    app's Robustness panel shows. With one corruption on, equals `corrupt(images, name, severity, seed)`."""
    unknown = set(severities) - set(CORRUPTIONS)
    if unknown:
        raise ValueError(f"unknown corruption(s) {', '.join(sorted(unknown))}; choose from {', '.join(CORRUPTIONS)}")
    out = images
    for name in CORRUPTIONS:
        s = int(severities.get(name) or 0)
        if s:
            out = corrupt(out, name, s, seed)
    return out if out is not images else images.clone()
