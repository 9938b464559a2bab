"""Frozen stages, computed once: the cache behind recipes with `freeze = k`.

The first k stages of the network (see `models.model_stages`) are run once, in eval mode, on every
image and on a few augmented views of each training image; their output is stored in fp16 and the
remaining stages train on it. The views (`view_params`) are shared with distillation (distill.py), which
can read a teacher's cache instead of running the teacher's frozen stages again: view 0 is the image
itself, view 1 its mirror, views 2.. random crops (zero padding) with a random flip; in every view a seeded
share `photo` of the images also goes through the photo round trip. Each view is drawn part by part from
generators seeded by (seed, view, part), so view v is the same whatever the number of views or processes.

The cache is written in parts of `PART` images (safetensors, atomically; `cached_parts`, which the
distillation's teacher targets use too): an extraction killed at any moment resumes at the first
missing part, and each part records the seconds it took, so the total extraction time survives
interruptions. With several processes, part p is computed by rank p % world; every rank then reads
them all. The folder's name digests everything the output depends on (`frozen_cache_fields`).
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
from ..onnx_forward import onnx_forward

PART = 2048
VIEWS_RULE = "view_params: a generator per (seed, view, part); photo share in every view"


def view_params(n: int, views: int, seed: int, pad: int, photo: float = 0.0) -> dict[str, torch.Tensor]:
    """The augmentation choices of every view of n images, each (views, n): dy, dx, flip (and resample with
    photo > 0), for `data.apply_augment` (see the module docstring). The images of part p (PART at a time) in
    view v are drawn from a generator seeded by (seed, view, part): with photo = 0 these are the crops and flips
    that every frozen-stage cache has had since the first CPU recipe, so the shipped runs reproduce."""
    views_drawn = []
    for v in range(views):
        parts = []
        for p in range((n + PART - 1) // PART):
            g = torch.Generator().manual_seed(seed * 1_000_003 + v * 10_007 + p)
            parts.append(draw_augment(min(PART, n - p * PART), g, pad, True, photo))
        drawn = {k: torch.cat([c[k] for c in parts]) for k in parts[0]}
        if v < 2:  # padded by `pad` and cropped at (pad, pad): the image itself, or its mirror
            drawn["dy"][:], drawn["dx"][:], drawn["flip"][:] = pad, pad, v == 1
        views_drawn.append(drawn)
    return {k: torch.stack([d[k] for d in views_drawn]) for k in views_drawn[0]}


def params_at(params: dict, view, index) -> dict:
    """The choices of (view, image) pairs: view and index are equal-length tensors (or a view and a slice)."""
    return {k: v[view, index] for k, v in params.items()}


def frozen_cache_fields(*, model: str, arch: dict, pretrained, stages: int, data_config: dict, data_md5: str,
                        amp: bool, seed: int, pad: int, photo: float, indices: str, views: int,
                        backend: str = "torch") -> dict:
    """Everything a frozen-stage cache depends on (its folder is named by their digest): the training run that
    makes it and a distillation that reads a teacher's cache (`fields_of_checkpoint`) both build it here. The
    backend (onnx_forward.py) is named only when it is not torch, so that caches made before it keep their names."""
    fields = dict(model=model, arch=arch, pretrained=pretrained, stages=int(stages), data_config=data_config,
                  data_md5=data_md5, amp=bool(amp), seed=int(seed), pad=int(pad), photo=float(photo or 0.0),
                  indices=indices, views=int(views), rule=VIEWS_RULE)
    return fields if backend == "torch" else dict(fields, backend=backend)


def fields_of_checkpoint(meta: dict) -> dict | None:
    """The training cache that the run which wrote checkpoint `meta` made (None: it trained end to end)."""
    r = meta.get("recipe") or {}
    if not r.get("freeze"):
        return None
    return frozen_cache_fields(model=meta["model"], arch=meta["arch"], pretrained=meta.get("pretrained"),
                               stages=r["freeze"], data_config=meta["data_config"],
                               data_md5=(meta.get("data_md5") or {}).get("train"), amp=meta.get("amp"),
                               seed=r["seed"], pad=r["crop_padding"], photo=r.get("photo_augment") or 0.0,
                               indices=(meta.get("split") or {}).get("train_indices_sha"), views=r["cache_views"],
                               backend=meta.get("frozen_backend") or "torch")


@torch.inference_mode()
def run_stages(stages, x: torch.Tensor) -> torch.Tensor:
    for s in stages:
        x = s(x)
    return x


def cache_key(**fields) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_stage_outputs(stages, images: torch.Tensor, params: dict, data_cfg: dict, *, device, amp: bool,
                         cache_dir, key: dict, pad: int, batch_size: int = 64, rank: int = 0,
                         world: int = 1, barrier=lambda: None, desc: str = "features", backend: str = "torch"):
    """fp16 (views, N, ...) outputs of the frozen `stages` for the views `params` (`view_params`) of uint8
    `images` (host), and the seconds the extraction took in all (summed over parts, whoever computed them and
    when). backend "onnxruntime" (onnx_forward.py) runs the stages there, in fp32."""
    for m in stages:
        m.eval()
    dev_type = torch.device(device).type
    ort = onnx_forward(stages, to_model_input(images[:2], data_cfg)) if backend != "torch" else None

    def compute(v: int, p: int, bar: tqdm) -> torch.Tensor:
        part = slice(p * PART, (p + 1) * PART)
        chunk = apply_augment(images[part], params_at(params, v, part), pad)
        out = []
        for i in range(0, len(chunk), batch_size):
            x = to_model_input(chunk[i:i + batch_size].to(device), data_cfg)
            if ort is not None:
                out.append(ort(x).to(torch.float16))
            else:
                with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp):
                    out.append(run_stages(stages, x).to("cpu", torch.float16))
            bar.update(len(x))
        return torch.cat(out)

    return cached_parts(Path(cache_dir) / cache_key(**key), key, len(params["dy"]), len(images), compute, rank=rank,
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
    todo = [(v, p) for i, (v, p) in enumerate(jobs) if i % world == rank and not part_path(folder, v, p).exists()]
    if todo:
        bar = tqdm(total=sum(min(PART, n - p * PART) for _, p in todo), desc=desc, unit="img", dynamic_ncols=True,
                   disable=rank != 0)
        for v, p in todo:
            t0 = time.perf_counter()
            out = compute(v, p, bar).contiguous()
            seconds = time.perf_counter() - t0
            tmp = part_path(folder, v, p).with_suffix(".partial")
            save_file({"out": out}, str(tmp), metadata={"seconds": str(seconds)})
            tmp.replace(part_path(folder, v, p))
        bar.close()
    barrier()
    return _load(folder, jobs, views, n)


def complete(folder: Path, views: int, n: int) -> bool:
    """Whether every part of the first `views` views of n images is on disk."""
    return all(part_path(folder, v, p).exists() for v in range(views) for p in range((n + PART - 1) // PART))


def read_part(folder: Path, view: int, part: int) -> torch.Tensor:
    return load_file(str(part_path(folder, view, part)))["out"]


def part_path(folder: Path, view: int, part: int) -> Path:
    return folder / f"view{view}-part{part:04d}.safetensors"


def _load(folder: Path, jobs, views: int, n: int):
    """Assemble the parts into one preallocated tensor (no second copy in memory)."""
    out, seconds = None, 0.0
    for v, p in jobs:
        path = part_path(folder, v, p)
        with safe_open(str(path), "pt") as f:
            seconds += float(f.metadata().get("seconds", "nan"))
        t = load_file(str(path))["out"]
        if out is None:
            out = torch.empty((views, n, *t.shape[1:]), dtype=t.dtype)
        out[v, p * PART:p * PART + len(t)] = t
    return out, seconds
