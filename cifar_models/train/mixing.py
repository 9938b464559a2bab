"""CutMix on whole batches (Yun et al. 2019): a box of each input is replaced by the same box of the
batch's previous input (the batch rolled by one), and the loss weighs the two labels by the areas they
keep. With `freeze = k` the inputs are the cached maps of stage k, so the box is cut from feature maps
(12x12 for EfficientNet-B0 at 192 px): a regulariser for the trained tail, which otherwise fits the
cached views almost perfectly (BENCHMARKS.md).

Every choice (which steps mix, the box) is drawn at an epoch's start from the epoch's generator, as
the loop's other choices are, so an interrupted run resumes exactly. Under torchrun each process mixes
within its own share of the global batch."""
from __future__ import annotations

import torch


def draw(steps: int, g: torch.Generator, prob: float) -> dict:
    """Per step: whether it mixes (probability `prob`), the kept share lam ~ Uniform(0, 1) = Beta(1, 1) and the box
    centre as fractions of the height and width."""
    u = torch.rand(steps, 4, generator=g)
    return dict(apply=u[:, 0] < prob, lam=u[:, 1], cy=u[:, 2], cx=u[:, 3])


def box(h: int, w: int, lam: float, cy: float, cx: float) -> tuple[int, int, int, int]:
    """The box (top, bottom, left, right) covering about 1 - lam of an h x w map, centred at (cy, cx), clipped."""
    r = (1.0 - lam) ** 0.5
    bh, bw = round(h * r), round(w * r)
    y, x = int(cy * h), int(cx * w)
    return max(y - bh // 2, 0), min(y - bh // 2 + bh, h), max(x - bw // 2, 0), min(x - bw // 2 + bw, w)


def apply(x: torch.Tensor, lam: float, cy: float, cx: float) -> tuple[torch.Tensor, float]:
    """x (N,C,H,W) with box pasted from x.roll(1, 0); returns it and the share of each input it keeps."""
    h, w = x.shape[-2:]
    t, b, l, r = box(h, w, lam, cy, cx)
    if t >= b or l >= r:
        return x, 1.0
    out = x.clone()
    out[:, :, t:b, l:r] = x.roll(1, 0)[:, :, t:b, l:r]
    return out, 1.0 - (b - t) * (r - l) / (h * w)
