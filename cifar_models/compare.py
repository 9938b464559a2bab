"""What the dashboard does with the two models, kept out of app.py: load them, run one image
through both, describe each one."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch
from PIL import Image

from .checkpoint import CheckpointError
from .inference import Classifier, load_classifier
from .models import get_entry

MODEL_NAMES = ("cnn9", "efficientnet_b0")  # the shipped pair, shown by default


def title(clf: Classifier) -> str:
    """How the dashboard names a model: its registry entry's title."""
    return get_entry(clf.name).title


def short_title(clf: Classifier) -> str:
    return title(clf).split(" · ")[0]


def color(clf: Classifier) -> str:
    return get_entry(clf.name).color


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


def model_inputs(models: dict[str, Classifier], image) -> dict[int, torch.Tensor]:
    """One PIL image as every model's (3, S, S) uint8 input, keyed by source size S: the photo is converted
    once per source size (both shipped models use the same 32 px), not once per model."""
    out = {}
    for clf in models.values():
        size = int(clf.data_config.get("source_size", 32))
        if size not in out:
            out[size] = clf.preprocess([image])[0]
    return out


def compare_inputs(models: dict[str, Classifier], inputs: list[dict[int, torch.Tensor]], k: int = 5) -> list[dict]:
    """Several images (from `model_inputs`) through every model, one forward pass per model for all of them.
    Per image: top-k, superclass and the forward pass's milliseconds per model (the whole batch's pass:
    what this image waited for), `agree`, and `batch` (how many images shared the pass)."""
    results = [{} for _ in inputs]
    for name, clf in models.items():
        size = int(clf.data_config.get("source_size", 32))
        x = torch.stack([inp[size] for inp in inputs])
        t0 = time.perf_counter()
        tops = clf.top_k(x, k=k)
        ms = round((time.perf_counter() - t0) * 1000, 1)
        for r, top in zip(results, tops):
            r[name] = dict(top=[dict(label=c, probability=p) for c, p in top],
                           superclass=clf.superclass(top[0][0]), milliseconds=ms)
    for r in results:
        r["agree"] = len({r[name]["top"][0]["label"] for name in models}) == 1
        r["batch"] = len(inputs)
    return results


def compare(models: dict[str, Classifier], image, k: int = 5) -> dict:
    """Run one PIL image through every model: top-k, superclass and forward-pass milliseconds per model."""
    return compare_inputs(models, [model_inputs(models, image)], k)[0]


class BatchedCompare:
    """`compare` for many threads at once: each caller converts its own image (in its own thread), then the
    forward passes of everything waiting run together on one thread (`serving.MicroBatcher`)."""

    def __init__(self, models: dict[str, Classifier], k: int = 5, max_batch: int | None = None):
        from .serving import MAX_BATCH, MicroBatcher

        self.models, self.k = models, k
        self.batcher = MicroBatcher(lambda inputs: compare_inputs(self.models, inputs, self.k),
                                    max_batch or MAX_BATCH, name="models")

    def __call__(self, image) -> dict:
        return self.batcher.submit(model_inputs(self.models, image))


def agreement_line(result: dict, models: dict[str, Classifier]) -> str:
    tops = {n: result[n]["top"][0] for n in models}
    if result["agree"]:
        label = next(iter(tops.values()))["label"].replace("_", " ")
        return f"✅ {'Both' if len(tops) == 2 else 'All'} models say **{label}**."
    said = ", ".join(f"{short_title(models[n])} says **{t['label'].replace('_', ' ')}** ({t['probability']:.0%})"
                     for n, t in tops.items())
    return f"⚖️ The models disagree: {said}."


def model_card(clf: Classifier) -> str:
    m = clf.meta
    test = (m.get("metrics") or {}).get("test") or {}
    pre = m.get("pretrained")
    start = ("ImageNet-1k pretrained (" + (pre.get("id") or pre.get("file", "")) + ")") if pre else "from scratch"
    size = m["data_config"]["input_size"]
    lines = [
        f"**{m.get('recipe', {}).get('description') or m.get('description', m['model'])}**",
        f"- Parameters: {clf.num_params / 1e6:.2f} M; input {size}x{size}; starts {start}",
        f"- Test top-1 **{test['top1']:.2%}**, top-5 {test['top5']:.2%} ({test['n']:,} images)" if test else
        "- Test metrics: not evaluated",
        f"- Trained {len(m.get('history', []))} epochs in {m.get('train_seconds', 0) / 60:.1f} min on {m.get('device', '?')}"
        f" (recipe `{m.get('recipe', {}).get('recipe', '?')}`)" + (
            f", plus {m['feature_extraction_seconds'] / 60:.0f} min to extract the frozen network's features once"
            if m.get("feature_extraction_seconds") else ""),
    ]
    cal = m.get("calibration")
    if cal and cal.get("test"):
        b, a = cal["test"]["before"], cal["test"]["after"]
        lines.append(f"- Calibration: temperature {cal['temperature']:.2f} fitted on the validation split; test ECE "
                     f"{b['ece']:.3f} → **{a['ece']:.3f}**, NLL {b['nll']:.3f} → **{a['nll']:.3f}**")
    if m.get("notes"):
        lines.append(f"- ⚠️ {m['notes']}")
    return "\n".join(lines)


def load_reports(checkpoint_dir="checkpoints", names=MODEL_NAMES) -> dict[str, dict]:
    """Each model's NAME.eval.json (scripts/evaluate.py), where present: read once at start-up."""
    out = {}
    for name in names:
        path = Path(checkpoint_dir) / f"{name}.eval.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


def explain(clf: Classifier, image, class_name: str, min_side: int = 256) -> Image.Image:
    """Grad-CAM of `class_name` overlaid on the image, at least min_side px so small images stay visible."""
    from .explain import gradcam, overlay

    out = overlay(image, gradcam(clf, image, clf.classes.index(class_name)))
    if min(out.size) < min_side:
        scale = min_side / min(out.size)
        out = out.resize((round(out.width * scale), round(out.height * scale)), Image.Resampling.BICUBIC)
    return out


def confusions_table(report: dict, n: int = 10) -> list[list]:
    return [[c["true"].replace("_", " "), c["predicted"].replace("_", " "), c["count"]]
            for c in report["top_confusions"][:n]]


def disagreements(reports: dict[str, dict], folder) -> list[tuple[str, str]]:
    """(image path, caption) for the saved test images (examples/disagreements/test{index}.png) on which
    the two models' top-1 differ, captioned with the truth and both predictions."""
    if len(reports) < 2:
        return []
    classes = list(next(iter(reports.values()))["per_class_accuracy"])
    im = {n: r["images"] for n, r in reports.items()}
    out = []
    for path in sorted(Path(folder).glob("test*.png"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)):
        i = int(re.sub(r"\D", "", path.stem))
        label = classes[im[next(iter(im))]["label"][i]]
        parts = [f"true: {label}"] + [f"{n}: {classes[im[n]['top1'][i]]} ({im[n]['confidence'][i]:.0%})"
                                      for n in im]
        out.append((str(path), " · ".join(parts).replace("_", " ")))
    return out
