"""Evaluate a classifier on a labelled split: the report `scripts/evaluate.py` writes."""
from __future__ import annotations

import torch

from . import metrics
from .data import Split


def evaluate_classifier(clf, split: Split, batch_size: int = 250) -> dict:
    """Top-1/top-5, NLL, ECE (15 bins), reliability bins, per-class and per-superclass accuracy,
    the most frequent confusions and the confusion matrix (rows: true class, columns: predicted)."""
    logits = clf.logits(split.images, batch_size=batch_size)
    labels = split.labels.cpu()
    n_cls = len(clf.classes)
    preds = logits.argmax(1)
    cm = metrics.confusion_matrix(preds, labels, n_cls)
    per_class = metrics.per_class_accuracy(cm)
    sup = torch.tensor(clf.superclass_of)
    sup_correct = sup[preds] == sup[labels]
    superclass_acc = {name: float(sup_correct[sup[labels] == s].float().mean())
                      for s, name in enumerate(clf.superclasses) if (sup[labels] == s).any()}
    off = cm.clone()
    off.fill_diagonal_(0)
    counts, flat = off.flatten().topk(20)
    confusions = [dict(true=clf.classes[int(i) // n_cls], predicted=clf.classes[int(i) % n_cls], count=int(c))
                  for c, i in zip(counts, flat) if c > 0]
    return dict(
        model=clf.name,
        summary=metrics.summarize(logits, labels),
        superclass_top1=float(sup_correct.float().mean()),
        reliability=metrics.reliability_bins(logits.softmax(1), labels),
        per_class_accuracy=dict(zip(clf.classes, per_class)),
        superclass_accuracy=superclass_acc,
        top_confusions=confusions,
        confusion_matrix=cm.tolist(),
    )
