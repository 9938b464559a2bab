import math

import pytest
import torch
import torch.nn.functional as F

from cifar_models.eval.calibration import calibration_report, fit_temperature


def _logits(n=2000, classes=100, acc=0.6, scale=1.0, seed=0):
    """A "model" right `acc` of the time: a margin on its predicted class, noise elsewhere, times scale."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    wrong = (labels + torch.randint(1, classes, (n,), generator=g)) % classes
    pred = torch.where(torch.rand(n, generator=g) < acc, labels, wrong)
    logits = torch.randn(n, classes, generator=g)
    logits[torch.arange(n), pred] += 3.0
    return logits * scale, labels


def test_over_confident_gets_t_above_one():
    logits, labels = _logits(scale=5.0)
    t = fit_temperature(logits, labels)
    assert t > 1
    assert F.cross_entropy(logits / t, labels) < F.cross_entropy(logits, labels)
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))
    assert fit_temperature(logits, labels) == t  # deterministic


def test_under_confident_gets_t_below_one():
    logits, labels = _logits(scale=0.2)
    t = fit_temperature(logits, labels)
    assert t < 1
    assert F.cross_entropy(logits / t, labels) < F.cross_entropy(logits, labels)


def test_fit_finds_the_minimum():
    logits, labels = _logits(scale=3.0, seed=1)
    t = fit_temperature(logits, labels)
    nll = lambda s: float(F.cross_entropy(logits.double() / s, labels))  # noqa: E731
    assert nll(t) <= min(nll(t * 1.01), nll(t / 1.01))
    # rescaling the logits rescales the temperature
    assert math.isclose(fit_temperature(logits * 4, labels), 4 * t, rel_tol=1e-4)


def test_report_fits_on_validation_only():
    val, val_y = _logits(scale=5.0, seed=2)
    test, test_y = _logits(scale=0.2, seed=3)  # a very different test set must not move T
    rep = calibration_report(val, val_y, test, test_y)
    assert rep["fitted_on"] == "validation" and rep["temperature"] == fit_temperature(val, val_y)
    for split in ("validation", "test"):
        for when in ("before", "after"):
            assert {"nll", "ece", "top1"} <= set(rep[split][when])
        assert rep[split]["before"]["top1"] == rep[split]["after"]["top1"]
    assert rep["validation"]["after"]["nll"] < rep["validation"]["before"]["nll"]
    assert rep["validation"]["after"]["ece"] < rep["validation"]["before"]["ece"]
    assert "test" not in calibration_report(val, val_y)


def test_empty_set_is_an_error():
    with pytest.raises(ValueError):
        fit_temperature(torch.empty(0, 10), torch.empty(0, dtype=torch.long))
