"""What the dashboard does with the models, kept out of app.py: load them, run images through them
(batched), explain a prediction, find where two disagree. The torch-free descriptions (titles, colours,
model cards) live in `catalog.py` and are re-exported here."""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import torch
from PIL import Image

from .catalog import (MODEL_NAMES, PALETTE, ModelInfo, agreement_line, checkpoint_names,  # noqa: F401 (re-exported)
                      confusions_table, default_shown, load_reports, model_card, model_colors, select, short_title,
                      title)
from .checkpoint import CheckpointError
from .inference import Classifier, load_classifier

log = logging.getLogger("cifar_compare")


def load_models(checkpoint_dir="checkpoints", device="cpu", names=MODEL_NAMES) -> dict[str, Classifier]:
    """The named checkpoints, loaded once. Raises CheckpointError naming the file and the fix."""
    models = {}
    for name in names:
        try:
            models[name] = load_classifier(Path(checkpoint_dir) / name, device=device)
        except CheckpointError as e:
            raise CheckpointError(f"{e}\n(to train it: python scripts/train.py --model {name} --recipe cpu, "
                                  f"or --recipe default on a GPU)") from None
    return models


def load_all(checkpoint_dir="checkpoints", device="cpu") -> tuple[dict[str, Classifier], dict[str, str]]:
    """Every checkpoint in the folder, whatever its name (each one knows its model from its own JSON).
    Returns (name -> Classifier, name -> why it could not be loaded); each is logged, with the time taken."""
    t0 = time.perf_counter()
    models, failed = {}, {}
    for name in checkpoint_names(checkpoint_dir):
        t = time.perf_counter()
        try:
            models[name] = load_classifier(Path(checkpoint_dir) / name, device=device)
        except CheckpointError as e:
            failed[name] = str(e)
            log.warning("checkpoint %s not loaded: %s", name, e)
            continue
        log.info("loaded checkpoint %s (%s) in %.2f s", name, models[name].name, time.perf_counter() - t)
    log.info("%d checkpoint(s) loaded from %s in %.2f s%s", len(models), checkpoint_dir, time.perf_counter() - t0,
             f"; {len(failed)} failed" if failed else "")
    return models, failed


def model_inputs(models: dict[str, Classifier], image) -> dict[int, torch.Tensor]:
    """One PIL image as every model's (3, S, S) uint8 input, keyed by source size S: the photo is converted
    once per source size (both shipped models use the same 32 px), not once per model."""
    out = {}
    for clf in models.values():
        size = int(clf.data_config.get("source_size", 32))
        if size not in out:
            out[size] = clf.preprocess([image])[0]
    return out


def compare_inputs(models: dict[str, Classifier], inputs: list[dict[int, torch.Tensor]], k: int = 5,
                   wanted: list | None = None) -> list[dict]:
    """Several images (from `model_inputs`) through the models, one forward pass per model for all the images
    that want it (`wanted[i]`: the model names image i asks for; default every model). Per image: top-k,
    superclass and the forward pass's milliseconds per model (the whole batch's pass: what this image waited
    for), `agree` (all its models' top-1 the same), and `batch` (how many images shared the pass)."""
    wanted = [list(w or models) for w in (wanted or [None] * len(inputs))]
    results = [{} for _ in inputs]
    for name, clf in models.items():
        rows = [i for i, w in enumerate(wanted) if name in w]
        if not rows:
            continue
        size = int(clf.data_config.get("source_size", 32))
        x = torch.stack([inputs[i][size] for i in rows])
        t0 = time.perf_counter()
        tops = [t for lo, hi in pow2_chunks(len(x)) for t in clf.top_k(x[lo:hi], k=k)]
        ms = round((time.perf_counter() - t0) * 1000, 1)
        for i, top in zip(rows, tops):
            results[i][name] = dict(top=[dict(label=c, probability=p) for c, p in top],
                                    superclass=clf.superclass(top[0][0]), milliseconds=ms)
    for r, w in zip(results, wanted):
        r["agree"] = len({r[name]["top"][0]["label"] for name in w if name in r}) == 1
        r["batch"] = len(inputs)
    return results


def pow2_chunks(n: int, largest: int = 16) -> list[tuple[int, int]]:
    """(start, end) of consecutive chunks of n items whose sizes are powers of two (at most `largest`), largest
    first: 13 -> 8 + 4 + 1. The CPU backend (oneDNN) keeps about 30 MB of prepared kernels per batch shape
    it has seen, so 16 possible batch sizes per model would grow the app by some 400 MB as they turn up;
    five shapes are prepared once (`warm_steps`) and memory stays flat."""
    out, lo = [], 0
    while lo < n:
        size = min(largest, 1 << ((n - lo).bit_length() - 1))
        out.append((lo, lo + size))
        lo += size
    return out


def warm_steps(models: dict[str, Classifier], largest: int = 16) -> list:
    """One forward pass per model at every batch shape `pow2_chunks` makes, as separate steps (callables), so
    that the memory the backend keeps per shape is taken once, soon after start-up, not as requests come in.
    The app runs them between requests (`MicroBatcher.wait_idle`)."""
    def step(clf, size):
        s = int(clf.data_config.get("source_size", 32))
        return lambda: clf.top_k(torch.zeros(size, 3, s, s, dtype=torch.uint8))

    sizes = [1 << i for i in range(largest.bit_length()) if 1 << i <= largest]
    return [step(clf, size) for size in sizes for clf in models.values()]


def compare(models: dict[str, Classifier], image, k: int = 5) -> dict:
    """Run one PIL image through every model: top-k, superclass and forward-pass milliseconds per model."""
    return compare_inputs(models, [model_inputs(models, image)], k)[0]



class BatchedCompare:
    """`compare` for many threads at once: each caller converts its own image (in its own thread), then the
    forward passes of everything waiting run together on one thread (`serving.MicroBatcher`), each model
    only on the images that asked for it."""

    def __init__(self, models: dict[str, Classifier], k: int = 5, max_batch: int | None = None):
        from .serving import MAX_BATCH, MicroBatcher

        self.models, self.k = models, k
        self.batcher = MicroBatcher(
            lambda items: compare_inputs(self.models, [x for x, _ in items], self.k, [w for _, w in items]),
            max_batch or MAX_BATCH, name="models")

    def __call__(self, image, names=None) -> dict:
        """Top-k of `names` (default: every model) for one PIL image."""
        chosen = select(self.models, names) if names else self.models
        return self.batcher.submit((model_inputs(chosen, image), list(chosen)))





def explain(clf: Classifier, image, class_name: str, min_side: int = 256) -> Image.Image:
    """Grad-CAM of `class_name` overlaid on the image, at least min_side px so small images stay visible."""
    from .explain import gradcam, overlay

    out = overlay(image, gradcam(clf, image, clf.classes.index(class_name)))
    if min(out.size) < min_side:
        scale = min_side / min(out.size)
        out = out.resize((round(out.width * scale), round(out.height * scale)), Image.Resampling.BICUBIC)
    return out



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
