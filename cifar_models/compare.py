"""What the dashboard does with the two models, kept out of app.py: load them, run one image
through both, describe each one."""
from __future__ import annotations

import time
from pathlib import Path

from .checkpoint import CheckpointError
from .inference import Classifier, load_classifier

MODEL_NAMES = ("cnn9", "efficientnet_b0")


def load_models(checkpoint_dir="checkpoints", device="cpu") -> dict[str, Classifier]:
    """Both shipped checkpoints, loaded once. Raises CheckpointError naming the file and the fix."""
    models = {}
    for name in MODEL_NAMES:
        try:
            models[name] = load_classifier(Path(checkpoint_dir) / name, device=device)
        except CheckpointError as e:
            raise CheckpointError(f"{e}\n(to train it: python scripts/train.py --model {name} --recipe cpu, "
                                  f"or --recipe default on a GPU)") from None
    return models


def compare(models: dict[str, Classifier], image, k: int = 5) -> dict:
    """Run one PIL image through every model: top-k, superclass and milliseconds per model."""
    result = {}
    for name, clf in models.items():
        t0 = time.perf_counter()
        (top,) = clf.predict([image], k=k)
        ms = (time.perf_counter() - t0) * 1000
        result[name] = dict(top=[dict(label=c, probability=p) for c, p in top],
                            superclass=clf.superclass(top[0][0]), milliseconds=round(ms, 1))
    tops = [r["top"][0]["label"] for r in result.values()]
    result["agree"] = len(set(tops)) == 1
    return result


def agreement_line(result: dict) -> str:
    a, b = (result[n]["top"][0] for n in MODEL_NAMES)
    if result["agree"]:
        return f"✅ Both models say **{a['label'].replace('_', ' ')}**."
    return (f"⚖️ The models disagree: cnn9 says **{a['label'].replace('_', ' ')}** ({a['probability']:.0%}), "
            f"EfficientNet-B0 says **{b['label'].replace('_', ' ')}** ({b['probability']:.0%}).")


def model_card(clf: Classifier) -> str:
    m = clf.meta
    test = (m.get("metrics") or {}).get("test") or {}
    pre = m.get("pretrained")
    start = ("ImageNet-1k pretrained (" + (pre.get("id") or pre.get("file", "")) + ")") if pre else "from scratch"
    size = m["data_config"]["input_size"]
    lines = [
        f"**{m.get('description', m['model'])}**",
        f"- Parameters: {clf.num_params / 1e6:.2f} M; input {size}x{size}; starts {start}",
        f"- Test top-1 **{test['top1']:.2%}**, top-5 {test['top5']:.2%} ({test['n']:,} images)" if test else
        "- Test metrics: not evaluated",
        f"- Trained {len(m.get('history', []))} epochs in {m.get('train_seconds', 0) / 60:.1f} min on {m.get('device', '?')}"
        f" (recipe `{m.get('recipe', {}).get('recipe', '?')}`)",
    ]
    if m.get("notes"):
        lines.append(f"- ⚠️ {m['notes']}")
    return "\n".join(lines)
