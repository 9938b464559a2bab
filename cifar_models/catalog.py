"""What the dashboard knows about each checkpoint without torch: names, titles, colours, model cards,
the agreement line, the analysis files. Works on a `Classifier` (in the process that holds the models) and
on the `ModelInfo` that describes one elsewhere (the dashboard's web process, see `worker.py`): both have
`checkpoint`, `name`, `entry_title`, `color`, `meta` and `num_params`.

Importing this module is cheap (no torch), so the web process can start serving before torch is loaded."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MODEL_NAMES = ("cnn9", "efficientnet_b0")  # the shipped pair, shown by default
# Colours for checkpoints beyond the first of each registry model (a model's first checkpoint, the one named
# like the model, keeps its registry colour): distinct from the registry's and from each other.
PALETTE = ("#3BB273", "#7768AE", "#F6AE2D", "#1B998B", "#C3423F", "#8D6A9F", "#4D9DE0", "#A0522D", "#6C757D")


@dataclass(frozen=True)
class ModelInfo:
    """A loaded checkpoint as the web process sees it: everything but the network."""
    checkpoint: str   # the checkpoint's name (its file name)
    name: str         # the registry model it is (cnn9, efficientnet_b0, timm:...)
    entry_title: str  # its registry entry's title
    color: str        # its registry entry's colour
    meta: dict        # the checkpoint's JSON
    num_params: int

    @property
    def data_config(self) -> dict:
        return self.meta["data_config"]

    @classmethod
    def of(cls, clf) -> "ModelInfo":
        return cls(clf.checkpoint, clf.name, clf.entry_title, clf.color, clf.meta, clf.num_params)


def title(m) -> str:
    """How the dashboard names a checkpoint: its registry entry's title, prefixed by the checkpoint's own
    name when that differs from the model's (cnn9_long · cnn9 · 9-layer CNN, from scratch)."""
    name = getattr(m, "checkpoint", m.name)
    return m.entry_title if name == m.name else f"{name} · {m.entry_title}"


def short_title(m) -> str:
    return title(m).split(" · ")[0]


def model_colors(models: dict) -> dict[str, str]:
    """Checkpoint name -> one colour, used for that checkpoint everywhere (bars, curves, diagrams)."""
    out = {n: c.color for n, c in models.items() if n == c.name}
    spare = [c for c in PALETTE if c not in out.values()]
    for i, n in enumerate(n for n in models if n not in out):
        out[n] = spare[i % len(spare)]
    return out


def checkpoint_names(checkpoint_dir) -> list[str]:
    """Every checkpoint in a folder, by name: NAME.json (not NAME.eval.json) or a NAME.safetensors left
    without its JSON (so that it is reported, not silently skipped). The shipped pair first, then A-Z."""
    folder = Path(checkpoint_dir)
    names = {p.stem for p in folder.glob("*.json") if not p.name.endswith(".eval.json")}
    names |= {p.stem for p in folder.glob("*.safetensors")}
    return sorted(names, key=lambda n: (n not in MODEL_NAMES, MODEL_NAMES.index(n) if n in MODEL_NAMES else 0, n))


def default_shown(models: dict, limit: int = 4) -> list[str]:
    """What the dashboard shows before anyone picks: the shipped pair when both loaded, else the first two."""
    pair = [n for n in MODEL_NAMES if n in models]
    return pair if len(pair) == len(MODEL_NAMES) else list(models)[:min(2, limit)]


def select(models: dict, names) -> dict:
    """The named models, in the order asked; KeyError naming what is loaded for an unknown name."""
    unknown = [n for n in names if n not in models]
    if unknown:
        raise KeyError(f"no loaded model named {', '.join(map(repr, unknown))}; loaded: {', '.join(models)}")
    return {n: models[n] for n in dict.fromkeys(names)}


def agreement_line(result: dict, models: dict) -> str:
    tops = {n: result[n]["top"][0] for n in models if n in result}
    if len({t["label"] for t in tops.values()}) == 1:
        label = next(iter(tops.values()))["label"].replace("_", " ")
        if len(tops) == 1:
            return f"{short_title(next(iter(models.values())))} says **{label}**."
        return f"✅ {'Both' if len(tops) == 2 else f'All {len(tops)}'} models say **{label}**."
    said = ", ".join(f"{short_title(models[n])} says **{t['label'].replace('_', ' ')}** ({t['probability']:.0%})"
                     for n, t in tops.items())
    return f"⚖️ The models disagree: {said}."


def model_card(m) -> str:
    meta = m.meta
    test = (meta.get("metrics") or {}).get("test") or {}
    pre = meta.get("pretrained")
    start = ("ImageNet-1k pretrained (" + (pre.get("id") or pre.get("file", "")) + ")") if pre else "from scratch"
    size = meta["data_config"]["input_size"]
    lines = [
        f"**{meta.get('recipe', {}).get('description') or meta.get('description', meta['model'])}**",
        f"- Parameters: {m.num_params / 1e6:.2f} M; input {size}x{size}; starts {start}",
        f"- Test top-1 **{test['top1']:.2%}**, top-5 {test['top5']:.2%} ({test['n']:,} images)" if test else
        "- Test metrics: not evaluated",
        f"- Trained {len(meta.get('history', []))} epochs in {meta.get('train_seconds', 0) / 60:.1f} min on "
        f"{meta.get('device', '?')} (recipe `{meta.get('recipe', {}).get('recipe', '?')}`)" + (
            f", plus {meta['feature_extraction_seconds'] / 60:.0f} min to extract the frozen network's features once"
            if meta.get("feature_extraction_seconds") else ""),
    ]
    cal = meta.get("calibration")
    if cal and cal.get("test"):
        b, a = cal["test"]["before"], cal["test"]["after"]
        lines.append(f"- Calibration: temperature {cal['temperature']:.2f} fitted on the validation split; test ECE "
                     f"{b['ece']:.3f} → **{a['ece']:.3f}**, NLL {b['nll']:.3f} → **{a['nll']:.3f}**")
    if meta.get("notes"):
        lines.append(f"- ⚠️ {meta['notes']}")
    return "\n".join(lines)


def load_reports(checkpoint_dir="checkpoints", names=MODEL_NAMES) -> dict[str, dict]:
    """Each model's NAME.eval.json (scripts/evaluate.py), where present: read once at start-up."""
    out = {}
    for name in names:
        path = Path(checkpoint_dir) / f"{name}.eval.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


def confusions_table(report: dict, n: int = 10) -> list[list]:
    return [[c["true"].replace("_", " "), c["predicted"].replace("_", " "), c["count"]]
            for c in report["top_confusions"][:n]]
