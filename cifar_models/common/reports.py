"""A checkpoint's evaluation report (`checkpoints/NAME.eval.json`): the one module that finds, loads,
merges and saves it. `eval/evaluation.py` computes its contents; `scripts/evaluate.py` and the training
loop write them through here; the dashboard's Analysis tab reads them through here.

A plain evaluation replaces the report but keeps the slow corruption figures when they belong to the same
weights (`replace_report`); the photo and corruption checks merge their part into it (`merge_report`).

No torch here: the web process loads the reports.
"""
from __future__ import annotations

import json
from pathlib import Path

from .files import atomic_write_json
from .meta import checkpoint_paths

CORRUPTION_KEYS = ("corruptions", "corruption_mca", "corruption_eval")  # what `--corruptions` adds


def report_path(checkpoint, limit: int | None = None) -> Path:
    """NAME.eval.json beside the checkpoint (NAME.eval-limitN.json for a --limit run)."""
    js = checkpoint_paths(checkpoint)[1]
    return js.with_suffix(f".eval-limit{limit}.json" if limit else ".eval.json")


def load_report(path) -> dict:
    """The report at `path`, or {} when there is none."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def load_reports(checkpoint_dir, names) -> dict[str, dict]:
    """Each named checkpoint's NAME.eval.json, where present: {name: report}."""
    out = {}
    for name in names:
        report = load_report(Path(checkpoint_dir) / f"{name}.eval.json")
        if report:
            out[name] = report
    return out


def contrast_pair(reports: dict[str, dict], names) -> list[str]:
    """The pair the disagreement gallery opens on: of `names` (in order), those whose reports hold every test
    image's prediction, the weakest and the strongest by test top-1, so that the default shows where the
    models differ most (a model from scratch against a transfer-learned one, not two near-twins). Fewer than
    two when fewer have such reports."""
    have = [n for n in names if reports.get(n, {}).get("images")]
    if len(have) <= 2:
        return have
    top1 = {n: reports[n].get("summary", {}).get("top1", 0.0) for n in have}
    weak, strong = min(have, key=top1.get), max(have, key=top1.get)
    return [weak, strong] if weak != strong else have[:2]


def save_report(path, report: dict) -> None:
    atomic_write_json(Path(path), report, indent=None)


def stale_corruptions(report: dict, weights_sha256: str | None) -> bool:
    """True when the report's corruption figures were computed for other weights."""
    ev = report.get("corruption_eval") or {}
    return bool(ev) and ev.get("weights_sha256") != weights_sha256


def replace_report(path, report: dict, weights_sha256: str | None) -> tuple[dict, bool]:
    """Write a plain evaluation's new report, keeping the old file's corruption figures when they were computed
    for the same weights (a corruption run is slow). Returns (what was written, whether stale figures were
    dropped)."""
    old = load_report(path)
    dropped = False
    if any(k in old for k in CORRUPTION_KEYS):
        if stale_corruptions(old, weights_sha256):
            dropped = True
        else:
            report = dict(report, **{k: old[k] for k in CORRUPTION_KEYS if k in old})
    save_report(path, report)
    return report, dropped


def merge_report(path, part: dict, new: dict | None = None) -> tuple[dict, bool]:
    """Merge `part` (the photo check's {"photo": ...}, or the corruption keys) into the report at `path`,
    keeping its other keys; `new` starts the report when there is none. Returns (the report, whether it
    existed)."""
    old = load_report(path)
    report = dict(old or (new or {}), **part)
    save_report(path, report)
    return report, bool(old)
