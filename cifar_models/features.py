"""Frozen-backbone training: compute a backbone's pooled features once and cache them.

Used by recipes with `freeze_backbone` (the CPU recipe for EfficientNet-B0): the network stays
whole, only its classifier is trained, on features of un-augmented images.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .data import to_model_input


@torch.inference_mode()
def extract_features(model, images: torch.Tensor, data_cfg: dict, batch_size: int, device, amp: bool,
                     desc: str = "features") -> torch.Tensor:
    """Pooled pre-logit features (N, D) float32 of uint8 images, through the frozen backbone."""
    model.eval()
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", dynamic_ncols=True):
        x = to_model_input(images[i:i + batch_size].to(device, non_blocking=True), data_cfg)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
            f = model.forward_head(model.forward_features(x), pre_logits=True)
        out.append(f.float().cpu())
    return torch.cat(out)


def cached_features(model, images, data_cfg, batch_size, device, amp, cache_dir, key: dict, desc: str):
    """extract_features, cached in cache_dir under a hash of everything that determines the result.
    Returns (features, seconds the extraction took when it was computed)."""
    from safetensors import safe_open

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"{digest}.safetensors"
    if path.exists():
        with safe_open(str(path), "pt") as f:
            seconds = float(f.metadata().get("seconds", "nan"))
        return load_file(path)["features"], seconds
    t0 = time.perf_counter()
    feats = extract_features(model, images, data_cfg, batch_size, device, amp, desc)
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"features": feats.contiguous()}, tmp, metadata={"key": json.dumps(key, sort_keys=True),
                                                               "seconds": str(seconds)})
    tmp.replace(path)
    return feats, seconds


def feature_cache_key(model_name: str, pretrained: dict | None, data_cfg: dict, data_md5: str, indices_digest: str,
                      amp: bool) -> dict:
    return dict(model=model_name, pretrained=pretrained, data_config=data_cfg, data_md5=data_md5,
                indices=indices_digest, amp=amp)
