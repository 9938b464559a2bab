"""The disagreement gallery: test images on which two checkpoints' top-1 differ, from their eval reports."""
from __future__ import annotations

import re
from pathlib import Path

from PIL import Image


def disagreements(reports: dict[str, dict], pair: tuple[str, str], folders=(), test_images=None,
                  limit: int = 48) -> tuple[list, int]:
    """The test images on which the pair's top-1 differ, as ([(PIL image, caption)], how many differ in all),
    captioned with the truth and both predictions (raw confidences). Images come from the test set when it
    is at hand (`test_images`: uint8 (N,3,32,32)), else from the PNGs saved as `*test{index}.png` in
    `folders` (scripts/make_examples.py ships some). A third each, up to `limit`: only the first model right,
    only the second, neither."""
    a, b = (reports[n] for n in pair)
    ia, ib = a["images"], b["images"]
    if len(ia["label"]) != len(ib["label"]) or ia["label"] != ib["label"]:
        return [], 0  # not the same test images (a --limit report): nothing to compare image by image
    classes = list(a["per_class_accuracy"])
    saved = {}
    for folder in folders:
        for path in Path(folder).glob("*test*.png"):
            m = re.search(r"test(\d+)$", path.stem)
            if m:
                saved.setdefault(int(m.group(1)), path)
    n = len(ia["label"])
    available = range(n) if test_images is not None and len(test_images) == n else sorted(i for i in saved if i < n)
    groups = ([], [], [])
    differ = 0
    for i in range(n):
        if ia["top1"][i] == ib["top1"][i]:
            continue
        differ += 1
        groups[0 if ia["top1"][i] == ia["label"][i] else 1 if ib["top1"][i] == ia["label"][i] else 2].append(i)
    have = set(available)
    chosen = sorted(i for g in groups for i in [j for j in g if j in have][: max(1, limit // 3)])[:limit]
    out = []
    for i in chosen:
        if test_images is not None and len(test_images) == n:
            img = Image.fromarray(test_images[i].permute(1, 2, 0).numpy())
        else:
            img = Image.open(saved[i]).convert("RGB")
        caption = " · ".join([f"true: {classes[ia['label'][i]]}"] + [
            f"{name}: {classes[r['images']['top1'][i]]} ({r['images']['confidence'][i]:.0%})"
            for name, r in zip(pair, (a, b))]).replace("_", " ")
        out.append((img, caption))
    return out, differ
