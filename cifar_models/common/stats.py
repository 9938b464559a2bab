"""How much a handful of images decides: Wilson confidence intervals for an accuracy and McNemar's exact
test for two models on the same images, with the sentences the dashboard and the scripts print.

Torch-free and SciPy-free (math.comb only), so the web process can use it.
"""
from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
ALPHA = 0.05  # "significant" below this p-value


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of an accuracy of k right out of n. n = 0: (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in 0..n (k={k}, n={n})")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_text(k: int, n: int) -> str:
    """'68.7% (95% CI 67.8-69.6%, 6,873 of 10,000)'; 'no labelled images' when n = 0."""
    if n <= 0:
        return "no labelled images"
    lo, hi = wilson(k, n)
    return f"{k / n:.1%} (95% CI {lo:.1%}–{hi:.1%}, {k:,} of {n:,})"


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided p-value of McNemar's exact test: b images only the first model got right, c only the second.
    Under the null hypothesis each of the b + c discordant images is equally likely to favour either model, so
    min(b, c) follows Binomial(b + c, 1/2)."""
    if b < 0 or c < 0:
        raise ValueError("counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def discordant(right_a: Sequence[bool], right_b: Sequence[bool]) -> tuple[int, int]:
    """(images only A got right, images only B got right), over the same images in the same order."""
    if len(right_a) != len(right_b):
        raise ValueError(f"the two models were scored on different images ({len(right_a)} vs {len(right_b)})")
    b = sum(1 for x, y in zip(right_a, right_b) if x and not y)
    c = sum(1 for x, y in zip(right_a, right_b) if y and not x)
    return b, c


def p_text(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}" if p < 0.01 else f"p = {p:.2f}"


def comparison(name_a: str, name_b: str, right_a: Sequence[bool], right_b: Sequence[bool],
               what: str = "these images") -> dict:
    """McNemar's exact test of two models on the same images: {"a", "b", "only_a", "only_b", "p", "better",
    "sentence"}; `better` is the significantly better model's name, or None."""
    only_a, only_b = discordant(right_a, right_b)
    p = mcnemar_exact(only_a, only_b)
    better = (name_a if only_a > only_b else name_b) if p < ALPHA else None
    counts = f"{only_a} image(s) only {name_a} got right, {only_b} only {name_b}"
    if better:
        worse = name_b if better == name_a else name_a
        sentence = f"{better} is better than {worse} on {what} ({p_text(p)}, McNemar's exact test; {counts})."
    else:
        sentence = (f"No significant difference between {name_a} and {name_b} on {what} ({p_text(p)}, "
                    f"McNemar's exact test; {counts}).")
    return dict(a=name_a, b=name_b, only_a=only_a, only_b=only_b, p=p, better=better, sentence=sentence)


def pairwise(right: dict[str, Sequence[bool]], what: str = "these images") -> list[dict]:
    """`comparison` of every pair of models (in the dict's order), each scored on the same images."""
    names = list(right)
    return [comparison(a, b, right[a], right[b], what) for i, a in enumerate(names) for b in names[i + 1:]]


def analysis_lines(reports: dict[str, dict], titles: dict[str, str] | None = None) -> str:
    """Markdown for the Analysis tab: each model's test top-1 with its Wilson interval (from its NAME.eval.json's
    per-image `images.top1` / `images.label`), and McNemar's test for every pair scored on the same images."""
    titles = titles or {}
    right, lines = {}, []
    for name, r in reports.items():
        imgs = r.get("images") or {}
        if imgs.get("label") and len(imgs.get("top1", [])) == len(imgs["label"]):
            right[name] = [int(p) == int(t) for p, t in zip(imgs["top1"], imgs["label"])]
            k, n = sum(right[name]), len(right[name])
        elif (r.get("summary") or {}).get("n"):
            n = int(r["summary"]["n"])
            k = round(r["summary"]["top1"] * n)
        else:
            continue
        lines.append(f"- **{titles.get(name, name)}**: test top-1 {accuracy_text(k, n)}")
    labels = {n: tuple(reports[n]["images"]["label"]) for n in right}
    same = [n for n in right if labels[n] == labels[next(iter(right))]] if right else []
    for c in pairwise({n: right[n] for n in same}, "the test set"):
        lines.append(f"- {c['sentence']}")
    return "\n".join(lines)
