"""Robustness to corruptions: test accuracy against severity for a classifier (what
`scripts/evaluate.py --corruptions` stores in NAME.eval.json), and the dashboard's corrupted
comparison. Both apply the corruptions of `cifar_models.corruptions` to the same 32x32 uint8
images the models see, so the app and the figures cannot drift apart."""
from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from .corruptions import CORRUPTIONS, SEVERITIES, apply_corruptions, corrupt
from .data import Split, indices_digest, stratified_subset

REPORT_KEYS = ("corruptions", "corruption_mca", "corruption_eval")


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
            definitions="cifar_models/corruptions.py (PARAMS)"),
    )


def stale_corruption_keys(report: dict, meta: dict) -> bool:
    """True when the report's corruption figures were computed for other weights than `meta`'s."""
    ev = report.get("corruption_eval") or {}
    return bool(ev) and ev.get("weights_sha256") != meta.get("weights_sha256")


# ----------------------------------------------------------------------------- the dashboard's side
def corrupted_comparison(models: dict, image: Image.Image, severities: dict[str, int], seed: int = 0,
                         k: int = 5) -> dict:
    """Run one PIL image through every model, clean and corrupted. The photo becomes each model's 32 px
    uint8 input once per source size, is corrupted there (the same functions as the evaluation), and
    both versions go through the model in one batch.

    Returns {"original": uint8 (3,H,W), "corrupted": uint8 (3,H,W), "models": {name: {"top": [...],
    "clean_top": [...], "superclass", "milliseconds"}}, "agree": bool, "active": {name: severity}}."""
    active = {n: int(s) for n, s in severities.items() if s}
    out, converted = {"models": {}, "active": active}, {}
    for name, clf in models.items():
        size = clf.data_config.get("source_size", 32)
        if size not in converted:
            clean = clf.preprocess([image])
            converted[size] = torch.cat([clean, apply_corruptions(clean, active, seed)])
            out.setdefault("original", converted[size][0])
            out.setdefault("corrupted", converted[size][1])
        t0 = time.perf_counter()
        clean_top, top = clf.top_k(converted[size], k=k)
        ms = (time.perf_counter() - t0) * 1000
        out["models"][name] = dict(top=[dict(label=c, probability=p) for c, p in top],
                                   clean_top=[dict(label=c, probability=p) for c, p in clean_top],
                                   superclass=clf.superclass(top[0][0]), milliseconds=round(ms, 1))
    out["agree"] = len({r["top"][0]["label"] for r in out["models"].values()}) == 1
    return out


def robustness_summary(result: dict, titles: dict | None = None) -> str:
    """One line per model: its top class on the corrupted image, and whether the corruption changed it."""
    from .corruptions import describe

    titles = titles or {}
    active = result["active"]
    head = ("Corruptions applied: " + "; ".join(describe(n, s) for n, s in active.items()) + "."
            if active else "No corruption applied: move a slider to corrupt the image.")
    lines = [head]
    for name, r in result["models"].items():
        now, was = r["top"][0], r["clean_top"][0]
        label = now["label"].replace("_", " ")
        if now["label"] == was["label"]:
            verdict = f"still **{label}** ({was['probability']:.0%} → {now['probability']:.0%})"
        else:
            verdict = f"now says **{label}** ({now['probability']:.0%}), was {was['label'].replace('_', ' ')} ({was['probability']:.0%})"
        lines.append(f"- {titles.get(name, name)}: {verdict}")
    return "\n".join(lines)


def to_display(image_uint8: torch.Tensor, size: int = 192) -> Image.Image:
    """A (3,H,W) uint8 image as a PIL image enlarged with nearest-neighbour, so the pixels stay visible."""
    img = Image.fromarray(image_uint8.permute(1, 2, 0).contiguous().numpy(), "RGB")
    return img.resize((size, size), Image.Resampling.NEAREST)
