"""Frozen stages, computed once: the cache behind recipes with `freeze = k`.

The first k stages of the network (see `models.model_stages`) are run once, in eval mode, on every
image and on a few augmented views of each training image; their output is stored in fp16 and the
remaining stages train on it. View 0 is the image itself, view 1 its mirror, views 2.. random crops
(zero padding) with a random flip, each drawn from a generator seeded by (seed, view, part).

The cache is written in parts of `PART` images (safetensors, atomically; `cached_parts`, which the
distillation's teacher targets use too): an extraction killed at any moment resumes at the first
missing part, and each part records the seconds it took, so the total extraction time survives
interruptions. With several processes, part p is computed by rank p % world; every rank then reads
them all.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..data import apply_augment, draw_augment, to_model_input

PART = 2048


def view_images(images: torch.Tensor, view: int, seed: int, part: int, pad: int) -> torch.Tensor:
    """The uint8 images of one cached view (see the module docstring)."""
    n = len(images)
    if view == 0:
        return images
    if view == 1:
        return images.flip(3)
    g = torch.Generator().manual_seed(seed * 1_000_003 + view * 10_007 + part)
    return apply_augment(images, draw_augment(n, g, pad, True), pad)


@torch.inference_mode()
def run_stages(stages, x: torch.Tensor) -> torch.Tensor:
    for s in stages:
        x = s(x)
    return x


def cache_key(**fields) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_stage_outputs(stages, images: torch.Tensor, views: int, data_cfg: dict, *, device, amp: bool,
                         cache_dir, key: dict, seed: int, pad: int, batch_size: int = 64, rank: int = 0,
                         world: int = 1, barrier=lambda: None, desc: str = "features"):
    """fp16 (views, N, ...) outputs of the frozen `stages` for uint8 `images` (host), and the seconds
    the extraction took in all (summed over parts, whoever computed them and when)."""
    for m in stages:
        m.eval()
    dev_type = torch.device(device).type

    def compute(v: int, p: int, bar: tqdm) -> torch.Tensor:
        chunk = view_images(images[p * PART:(p + 1) * PART], v, seed, p, pad)
        out = []
        for i in range(0, len(chunk), batch_size):
            x = to_model_input(chunk[i:i + batch_size].to(device), data_cfg)
            with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp):
                out.append(run_stages(stages, x).to("cpu", torch.float16))
            bar.update(len(x))
        return torch.cat(out)

    return cached_parts(Path(cache_dir) / cache_key(**key), key, views, len(images), compute, rank=rank,
                        world=world, barrier=barrier, desc=desc)


def cached_parts(folder: Path, key: dict, views: int, n: int, compute: Callable[[int, int, tqdm], torch.Tensor],
                 *, rank: int = 0, world: int = 1, barrier=lambda: None,
                 desc: str = "cache") -> tuple[torch.Tensor, float]:
    """A (views, n, ...) tensor kept in `folder` as resumable parts: `compute(view, part, bar)` gives the rows of
    images part*PART.. in that view (advancing `bar` by the images done) for every part not on disk yet (part p
    by rank p % world); then every rank reads them all. Returns it and the seconds its parts took in all."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "key.json").write_text(json.dumps(key, indent=1, default=str) + "\n")
    jobs = [(v, p) for v in range(views) for p in range((n + PART - 1) // PART)]
    todo = [(v, p) for i, (v, p) in enumerate(jobs) if i % world == rank and not _part(folder, v, p).exists()]
    if todo:
        bar = tqdm(total=sum(min(PART, n - p * PART) for _, p in todo), desc=desc, unit="img", dynamic_ncols=True,
                   disable=rank != 0)
        for v, p in todo:
            t0 = time.perf_counter()
            out = compute(v, p, bar).contiguous()
            seconds = time.perf_counter() - t0
            tmp = _part(folder, v, p).with_suffix(".partial")
            save_file({"out": out}, str(tmp), metadata={"seconds": str(seconds)})
            tmp.replace(_part(folder, v, p))
        bar.close()
    barrier()
    return _load(folder, jobs, views, n)


def _part(folder: Path, view: int, part: int) -> Path:
    return folder / f"view{view}-part{part:04d}.safetensors"


def _load(folder: Path, jobs, views: int, n: int):
    """Assemble the parts into one preallocated tensor (no second copy in memory)."""
    out, seconds = None, 0.0
    for v, p in jobs:
        path = _part(folder, v, p)
        with safe_open(str(path), "pt") as f:
            seconds += float(f.metadata().get("seconds", "nan"))
        t = load_file(str(path))["out"]
        if out is None:
            out = torch.empty((views, n, *t.shape[1:]), dtype=t.dtype)
        out[v, p * PART:p * PART + len(t)] = t
    return out, seconds
