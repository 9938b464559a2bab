"""Robustness to corruptions: test accuracy against severity for a classifier (what
`scripts/evaluate.py --corruptions` merges into NAME.eval.json). The dashboard's Robustness lab
(`serve/lab.py`) applies the same corruptions (`eval/corruptions.py`) to the same 32x32 uint8
images the models see, so the lab and the figures cannot drift apart."""
from __future__ import annotations

import time

import numpy as np
import torch

from ..data import Split, stratified_subset
from .corruptions import CORRUPTIONS, SEVERITIES, corrupt


def corruption_subset(split: Split, limit: int | None, seed: int = 0) -> tuple[Split, np.ndarray]:
    """About `limit` images, the same number per class (all of them when limit is falsy or too big)."""
    if not limit or limit >= len(split):
        idx = np.arange(len(split))
    else:
        idx = stratified_subset(split.labels.numpy(), limit, seed)
    return split.take(idx), idx


def _top1(clf, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    return float((clf.logits(images, batch_size=batch_size).argmax(1) == labels).float().mean())


def evaluate_corruptions(clf, split: Split, *, seed: int = 0, batch_size: int = 100, names=None,
                         progress: bool = True, subset: dict | None = None) -> dict:
    """Top-1 of `clf` on `split` under every corruption at every severity, each corrupted set generated
    on the fly from (seed, corruption name), the same for every model. Returns the keys merged into
    NAME.eval.json: corruptions {name: [top-1 at severity 1..5]}, corruption_mca (their mean: mean
    corruption accuracy) and corruption_eval (clean top-1 on the same images, image count, seed,
    subset, timing, weights)."""
    from tqdm.auto import tqdm

    names = list(names or CORRUPTIONS)
    labels = split.labels.cpu()
    n = len(split)
    t0 = time.perf_counter()
    bar = tqdm(total=(1 + len(names) * len(SEVERITIES)) * n, unit="img", desc=f"{clf.name} clean",
               disable=not progress, dynamic_ncols=True)
    clean = _top1(clf, split.images, labels, batch_size)
    bar.update(n)
    bar.set_postfix_str(f"clean top-1 {clean:.1%}")
    table = {}
    for name in names:
        row = []
        for s in SEVERITIES:
            bar.set_description(f"{clf.name} {name} s{s}")
            row.append(_top1(clf, corrupt(split.images, name, s, seed), labels, batch_size))
            bar.update(n)
            bar.set_postfix_str(f"top-1 {row[-1]:.1%}")
        table[name] = row
    bar.close()
    seconds = time.perf_counter() - t0
    mca = float(np.mean([a for row in table.values() for a in row])) if table else float("nan")
    return dict(
        corruptions=table,
        corruption_mca=mca,
        corruption_eval=dict(
            test_images=n, seed=seed, severities=list(SEVERITIES), clean_top1=clean,
            relative_mca=mca / clean if clean else None,
            subset=subset or dict(kind="all"), seconds=round(seconds, 1),
            images_per_second=round((1 + len(names) * len(SEVERITIES)) * n / seconds, 1),
            device=str(clf.device), weights_sha256=clf.meta.get("weights_sha256"),
            definitions="cifar_models/common/corruption_specs.py (PARAMS)"),
    )
