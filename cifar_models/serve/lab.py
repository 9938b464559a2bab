"""The Robustness lab and the live webcam, on the models' side: one image (or webcam frame) through the
shown models, clean and corrupted. The corruptions are the evaluation's own (`eval/corruptions.py`), applied
to the same 32x32 uint8 image the models see, so the lab and the figures cannot drift apart."""
from __future__ import annotations

import time

import torch
from PIL import Image

from ..common.corruption_specs import describe
from ..common.images import frame_image
from ..eval.corruptions import apply_corruptions
from .batching import compare


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


def live_predictions(models: dict, payload, k: int = 5) -> tuple[dict, float]:
    """One frame through every model: ({name: {label: probability}} for gr.Label, milliseconds for
    decode + all models). Raises ImageInputError for a frame that cannot be decoded."""
    t0 = time.perf_counter()
    result = compare(models, frame_image(payload), k=k)
    labels = {name: {t["label"].replace("_", " "): t["probability"] for t in result[name]["top"]} for name in models}
    return labels, (time.perf_counter() - t0) * 1000
