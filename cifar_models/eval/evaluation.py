"""Evaluate a classifier: the test report and analysis file (`NAME.eval.json`) that
`scripts/evaluate.py` writes and the app loads, and the temperature fitted on validation."""
from __future__ import annotations

import numpy as np
import torch

from . import metrics
from .calibration import calibration_report
from ..data import Cifar100, Split, stratified_split


def validation_split(data: Cifar100, meta: dict) -> Split:
    """The checkpoint's own held-out validation images (same seed and size as in its training)."""
    split = meta.get("split", {})
    _, val_idx = stratified_split(data.train.labels.numpy(), split.get("val_per_class", 50), split.get("seed", 0))
    return data.train.take(val_idx)


def evaluate_classifier(clf, split: Split, batch_size: int = 250, val_split: Split | None = None) -> dict:
    """Top-1/top-5, NLL, ECE (15 bins), reliability bins, per-class and per-superclass accuracy,
    the most frequent confusions, the confusion matrix (rows: true class) and every image's label,
    top-1 and confidence. With val_split, also a temperature fitted on it (never on `split`), with
    NLL/ECE before and after on both."""
    logits = clf.logits(split.images, batch_size=batch_size)
    labels = split.labels.cpu()
    n_cls = len(clf.classes)
    probs = logits.softmax(1)
    conf, preds = probs.max(1)
    cm = metrics.confusion_matrix(preds, labels, n_cls)
    sup = torch.tensor(clf.superclass_of)
    sup_correct = sup[preds] == sup[labels]
    superclass_acc = {name: float(sup_correct[sup[labels] == s].float().mean())
                      for s, name in enumerate(clf.superclasses) if (sup[labels] == s).any()}
    off = cm.clone()
    off.fill_diagonal_(0)
    counts, flat = off.flatten().topk(20)
    confusions = [dict(true=clf.classes[int(i) // n_cls], predicted=clf.classes[int(i) % n_cls], count=int(c))
                  for c, i in zip(counts, flat) if c > 0]
    report = dict(
        model=clf.name,
        summary=metrics.summarize(logits, labels),
        superclass_top1=float(sup_correct.float().mean()),
        reliability=metrics.reliability_bins(probs, labels),
        per_class_accuracy=dict(zip(clf.classes, metrics.per_class_accuracy(cm))),
        superclass_accuracy=superclass_acc,
        top_confusions=confusions,
        confusion_matrix=cm.tolist(),
        images=dict(label=labels.tolist(), top1=preds.tolist(),
                    confidence=np.round(conf.numpy().astype(float), 4).tolist()),
    )
    if val_split is not None:
        cal = calibration_report(clf.logits(val_split.images, batch_size=batch_size), val_split.labels.cpu(),
                                 logits, labels)
        report["calibration"] = cal
        report["reliability_calibrated"] = metrics.reliability_bins((logits / cal["temperature"]).softmax(1), labels)
    return report
