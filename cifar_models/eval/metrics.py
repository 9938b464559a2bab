"""Classification metrics computed from logits: accuracy, NLL, calibration, per-class views."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017): sum over bins of |acc - conf| * share."""
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    bins = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.float().mean().double() * (correct[m].mean() - conf[m].mean()).abs().double()
    return float(ece)


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> list[dict]:
    """Per confidence bin: count, mean confidence, accuracy (for a reliability diagram)."""
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    bins = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    out = []
    for b in range(n_bins):
        m = bins == b
        n = int(m.sum())
        out.append(dict(lo=b / n_bins, hi=(b + 1) / n_bins, count=n,
                        confidence=float(conf[m].mean()) if n else None,
                        accuracy=float(correct[m].mean()) if n else None))
    return out


def summarize(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """top1, top5, nll and ece (15 bins) of a set of logits; n images."""
    logits, labels = logits.float().cpu(), labels.cpu()
    probs = logits.softmax(1)
    top5 = logits.topk(min(5, logits.shape[1]), 1).indices
    return dict(
        n=len(labels),
        top1=float((top5[:, 0] == labels).float().mean()),
        top5=float((top5 == labels[:, None]).any(1).float().mean()),
        nll=float(F.cross_entropy(logits, labels)),
        ece=expected_calibration_error(probs, labels, n_bins),
    )


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true, predicted) counts."""
    return torch.bincount(labels.cpu() * num_classes + preds.cpu(), minlength=num_classes ** 2).view(
        num_classes, num_classes)


def per_class_accuracy(cm: torch.Tensor) -> list[float]:
    return (cm.diag().float() / cm.sum(1).clamp(min=1).float()).tolist()
