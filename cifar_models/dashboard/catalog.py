"""What the page says about the loaded checkpoints, without torch: which are shown first, their colours,
the agreement line, the confusions table. (Titles and model cards: `common/meta.py`, the checkpoint JSON's
owner; the checkpoints themselves arrive as `common.hosts.ModelInfo`.)"""
from __future__ import annotations

from ..common.meta import short_title

MAX_SHOWN = 4  # models side by side at most
# Colours for checkpoints beyond the first of each registry model (a model's first checkpoint, the one named
# like the model, keeps its registry colour): distinct from the registry's and from each other.
PALETTE = ("#3BB273", "#7768AE", "#F6AE2D", "#1B998B", "#C3423F", "#8D6A9F", "#4D9DE0", "#A0522D", "#6C757D")


def default_shown(models: dict, limit: int = MAX_SHOWN) -> list[str]:
    """What the page shows before anyone picks: the folder's first checkpoints (A-Z, as loaded), up to
    `limit`. The shipped folder shows all of its checkpoints."""
    return list(models)[:limit]


def model_colors(models: dict) -> dict[str, str]:
    """Checkpoint name -> one colour, used for that checkpoint everywhere (bars, curves, diagrams)."""
    out = {n: c.color for n, c in models.items() if n == c.name}
    spare = [c for c in PALETTE if c not in out.values()]
    for i, n in enumerate(n for n in models if n not in out):
        out[n] = spare[i % len(spare)]
    return out


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


def confusions_table(report: dict, n: int = 10) -> list[list]:
    return [[c["true"].replace("_", " "), c["predicted"].replace("_", " "), c["count"]]
            for c in report["top_confusions"][:n]]
