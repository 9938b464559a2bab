"""Every model on a person's own images (`user_images`): the run in chunks, then the figures shown by the
command line (`scripts/evaluate.py --images`), the dashboard's *Your images* tab and its `/evaluate_images` API:
per-checkpoint accuracy with 95% intervals, McNemar's test per pair, agreement, per-class counts, the rows of the
CSV. Torch-free: the models are reached through `run(images, names) -> per image {checkpoint: {"top": ...}}`
(`host.LocalModels.evaluate_images`, in the model process or in this one).
"""
from __future__ import annotations

import csv
import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from PIL import Image, ImageOps

from .images import ImageInputError
from .stats import accuracy_text, pairwise, wilson
from .user_images import Collection, Item, decode

CSV_COLUMNS = ("file", "label", "checkpoint", "prediction", "probability", "top5", "correct", "error")
CHUNK = 4  # images per call to the models: a visitor's single prediction waits for at most one such pass
KEEP = 48  # images kept for the galleries, per model's mistakes and for the disagreements
THUMB = 256  # px, the longest side of a kept image

Runner = Callable[[list[Image.Image], list[str]], list[dict]]


@dataclass
class Evaluation:
    names: list[str]
    files: list[str] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    tops: dict[str, list[list[tuple[str, float]]]] = field(default_factory=dict)  # model -> per image top-5
    rejected: list[dict] = field(default_factory=list)
    kept: dict[int, Image.Image] = field(default_factory=dict)  # image index -> a small copy (galleries)
    kept_counts: dict[str, int] = field(default_factory=dict)  # model (or "*": disagreement) -> images seen
    seconds: float = 0.0

    def correct(self, name: str, k: int = 1) -> list[bool]:
        """Per labelled image (in order): whether the label is in the model's top-k."""
        return [lab in [c for c, _ in top[:k]] for lab, top in zip(self.labels, self.tops[name]) if lab]

    def summary(self) -> dict:
        out = {}
        for name in self.names:
            r1, r5 = self.correct(name, 1), self.correct(name, 5)
            n = len(r1)
            out[name] = dict(images=len(self.files), labelled=n, top1=sum(r1) / n if n else None,
                             top5=sum(r5) / n if n else None, top1_ci95=list(wilson(sum(r1), n)) if n else None,
                             top5_ci95=list(wilson(sum(r5), n)) if n else None)
        return out

    def comparisons(self) -> list[dict]:
        """McNemar's exact test of every pair, on the labelled images (top-1)."""
        if not any(self.labels):
            return []
        return pairwise({n: self.correct(n) for n in self.names})

    def disagreements(self) -> list[int]:
        return [i for i in range(len(self.files)) if len({self.tops[n][i][0][0] for n in self.names}) > 1]

    def wrong(self, name: str) -> list[int]:
        return [i for i, lab in enumerate(self.labels) if lab and self.tops[name][i][0][0] != lab]

    def rows(self) -> list[dict]:
        """One row per (image, checkpoint), then one per rejected file: the CSV's rows, the API's too."""
        out = []
        for i, (file, label) in enumerate(zip(self.files, self.labels)):
            for name in self.names:
                top = self.tops[name][i]
                out.append(dict(file=file, label=label or "", checkpoint=name, prediction=top[0][0],
                                probability=round(top[0][1], 6), top5="|".join(c for c, _ in top[:5]),
                                correct=None if not label else int(top[0][0] == label)))
        return out

    def csv_text(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, CSV_COLUMNS, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        writer.writerows(self.rejected)
        return buf.getvalue()

    def api(self) -> dict:
        return dict(summary=self.summary(), rows=self.rows(), rejected=list(self.rejected),
                    comparisons=[dict(a=c["a"], b=c["b"], p=c["p"], better=c["better"], sentence=c["sentence"])
                                 for c in self.comparisons()],
                    agree=len(self.files) - len(self.disagreements()), seconds=round(self.seconds, 3))


def _decoded(items: list[Item]) -> list[tuple[Item, Image.Image | None, str | None]]:
    out = []
    for item in items:
        try:
            out.append((item, decode(item), None))
        except ImageInputError as e:
            out.append((item, None, str(e)))
    return out


def _keep(ev: Evaluation, index: int, image: Image.Image) -> None:
    """A small upright copy of an image a gallery may show: one of the first KEEP mistakes of some model, or
    one of the first KEEP disagreements."""
    tops = {n: ev.tops[n][index][0][0] for n in ev.names}
    label = ev.labels[index]
    reasons = [n for n in ev.names if label and tops[n] != label] + (["*"] if len(set(tops.values())) > 1 else [])
    for reason in reasons:
        ev.kept_counts[reason] = ev.kept_counts.get(reason, 0) + 1
    if any(ev.kept_counts[r] <= KEEP for r in reasons):
        small = ImageOps.exif_transpose(image).convert("RGB")
        small.thumbnail((THUMB, THUMB))
        ev.kept[index] = small


def _record(ev: Evaluation, decoded: list, results: list[dict]) -> None:
    good = [(item, image) for item, image, error in decoded if error is None]
    for item, image, error in decoded:
        if error is not None:
            ev.rejected.append(dict(file=item.file, error=error))
    for (item, image), result in zip(good, results):
        ev.files.append(item.file)
        ev.labels.append(item.label)
        for name in ev.names:
            ev.tops[name].append([(t["label"], float(t["probability"])) for t in result[name]["top"]])
        _keep(ev, len(ev.files) - 1, image)


def evaluate(photos: Collection, run: Runner, names: list[str], chunk: int = CHUNK,
             progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Every image of `photos` through `run` (the models), `chunk` images per call. Decoding of the next chunk
    (Pillow, this process) overlaps the models' work on the current one. `progress(done, total)` after each."""
    t0 = time.perf_counter()
    ev = Evaluation(list(names), rejected=list(photos.rejected), tops={n: [] for n in names})
    chunks = [photos.items[i:i + chunk] for i in range(0, len(photos.items), chunk)]
    done = 0
    with ThreadPoolExecutor(1, thread_name_prefix="decode") as pool:
        ahead = pool.submit(_decoded, chunks[0]) if chunks else None
        for i in range(len(chunks)):
            decoded = ahead.result()
            ahead = pool.submit(_decoded, chunks[i + 1]) if i + 1 < len(chunks) else None
            images = [image for _, image, error in decoded if error is None]
            _record(ev, decoded, run(images, list(names)) if images else [])
            done += len(decoded)
            if progress:
                progress(done, len(photos.items))
    ev.seconds = time.perf_counter() - t0
    return ev


def summary_lines(ev: Evaluation, titles: dict[str, str] | None = None) -> list[str]:
    """What the command line prints (and the tab shows): per checkpoint, then agreement and each pair's test."""
    titles = titles or {}
    s = ev.summary()
    lines = []
    for name in ev.names:
        r1, r5 = ev.correct(name, 1), ev.correct(name, 5)
        acc = (f"top-1 {accuracy_text(sum(r1), len(r1))}; top-5 {accuracy_text(sum(r5), len(r5))}" if r1
               else "no labelled image, so no accuracy")
        lines.append(f"{titles.get(name, name)}: {s[name]['images']:,} images, {s[name]['labelled']:,} labelled; {acc}")
    if len(ev.names) > 1 and ev.files:
        agree = len(ev.files) - len(ev.disagreements())
        lines.append(f"The {len(ev.names)} models agree (same top-1) on {agree:,} of {len(ev.files):,} images "
                     f"({agree / len(ev.files):.1%}).")
    lines += [c["sentence"] for c in ev.comparisons()]
    return lines


def per_class(ev: Evaluation) -> tuple[list[list], list[str]]:
    """(rows, headers): per labelled class, its images and each model's top-1 right (count and share)."""
    counts: dict[str, list] = {}
    for i, lab in enumerate(ev.labels):
        if lab:
            row = counts.setdefault(lab, [0] + [0] * len(ev.names))
            row[0] += 1
            for j, name in enumerate(ev.names):
                row[j + 1] += ev.tops[name][i][0][0] == lab
    rows = [[c.replace("_", " "), r[0]] + [f"{k} ({k / r[0]:.0%})" for k in r[1:]] for c, r in sorted(counts.items())]
    return rows, ["class", "images"] + [f"{n}: top-1 right" for n in ev.names]
