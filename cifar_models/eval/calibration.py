"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

One scalar T > 0 divides the logits: softmax(z / T). It is fitted by minimising the NLL on held-out
validation logits only; the test set is only ever reported. Dividing by T never changes the argmax,
so top-1/top-5 accuracy stay the same while confidence (NLL, ECE) is corrected.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .metrics import summarize

T_MIN, T_MAX = 1e-3, 1e3


def _nll(logits: torch.Tensor, labels: torch.Tensor, t: float) -> float:
    return float(F.cross_entropy(logits / t, labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, tol: float = 1e-7) -> float:
    """T in [T_MIN, T_MAX] minimising the NLL of softmax(logits / T): golden-section search on log T.

    The NLL is convex in 1/T, hence unimodal in log T, so the bounded search is exact, needs no step
    size and is deterministic (float64 on CPU). An optimum beyond the bounds returns the bound."""
    logits, labels = logits.detach().double().cpu(), labels.detach().long().cpu()
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on an empty set")
    f = lambda u: _nll(logits, labels, math.exp(u))  # noqa: E731
    g = (math.sqrt(5) - 1) / 2
    a, b = math.log(T_MIN), math.log(T_MAX)
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:  # minimum in [a, d]
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:  # minimum in [c, b]
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return math.exp((a + b) / 2)


def calibration_report(val_logits: torch.Tensor, val_labels: torch.Tensor, test_logits: torch.Tensor | None = None,
                       test_labels: torch.Tensor | None = None, n_bins: int = 15) -> dict:
    """Fit T on validation; `summarize` (top1, top5, nll, ece) before and after for validation and test."""
    t = fit_temperature(val_logits, val_labels)
    report = dict(temperature=t, fitted_on="validation", n_bins=n_bins)
    for split, logits, labels in (("validation", val_logits, val_labels), ("test", test_logits, test_labels)):
        if logits is None:
            continue
        logits = logits.detach().float().cpu()
        report[split] = dict(before=summarize(logits, labels, n_bins), after=summarize(logits / t, labels, n_bins))
    return report
