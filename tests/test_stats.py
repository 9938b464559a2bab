"""Wilson intervals and McNemar's exact test against published values and an independent computation."""
import math

import pytest

from cifar_models.common.stats import (accuracy_text, comparison, discordant, mcnemar_exact, pairwise, analysis_lines,
                                wilson)


def test_wilson_matches_published_values():
    # Newcombe (1998), Statistics in Medicine 17: 857-872, table I: 81/263 -> 0.2553-0.3662; 0/10 -> 0-0.2775
    lo, hi = wilson(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo, hi = wilson(0, 10)
    assert lo == 0 and round(hi, 4) == 0.2775
    lo, hi = wilson(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.49, 0.943)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_wilson_is_narrower_with_more_images_and_contains_the_estimate():
    for k, n in ((3, 10), (30, 100), (300, 1000)):
        lo, hi = wilson(k, n)
        assert lo < k / n < hi
    assert wilson(300, 1000)[1] - wilson(300, 1000)[0] < wilson(30, 100)[1] - wilson(30, 100)[0]


def _brute_force_p(b: int, c: int) -> float:
    """Two-sided exact binomial test p-value by summing every outcome no more likely than the one seen."""
    n = b + c
    if n == 0:
        return 1.0
    probs = [math.comb(n, i) / 2 ** n for i in range(n + 1)]
    return min(1.0, sum(p for p in probs if p <= probs[b] * (1 + 1e-12)))


@pytest.mark.parametrize("b,c", [(0, 0), (1, 9), (9, 1), (5, 5), (0, 6), (12, 3), (40, 61), (390, 1804)])
def test_mcnemar_exact_equals_the_exact_binomial_test(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(_brute_force_p(b, c), rel=1e-9, abs=1e-300)


def test_mcnemar_against_scipy_when_installed():
    scipy_stats = pytest.importorskip("scipy.stats")
    for b, c in ((1, 9), (12, 3), (40, 61)):
        assert mcnemar_exact(b, c) == pytest.approx(scipy_stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_known_p_value_and_sentences():
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    a = [True] * 10 + [False] * 10
    b = [False] * 9 + [True] + [True] * 10  # B right on everything A missed and on one A got right
    assert discordant(a, b) == (9, 10)
    assert comparison("cnn9", "b0", a, b)["better"] is None
    strong = comparison("cnn9", "b0", [False] * 12 + [True] * 8, [True] * 20)
    assert strong["better"] == "b0" and strong["sentence"].startswith("b0 is better than cnn9 on these images (p = ")
    weak = comparison("cnn9", "b0", [True, False, True], [True, True, False])
    assert weak["sentence"].startswith("No significant difference between cnn9 and b0")
    with pytest.raises(ValueError):
        discordant([True], [True, False])
    assert [(c["a"], c["b"]) for c in pairwise({"x": [1], "y": [0], "z": [1]})] == [("x", "y"), ("x", "z"), ("y", "z")]


def test_accuracy_text_and_the_analysis_lines():
    assert accuracy_text(0, 0) == "no labelled images"
    assert accuracy_text(8, 10).startswith("80.0% (95% CI 49.0%–94.3%, 8 of 10)")
    labels = [0, 1, 2, 3] * 25
    reports = {"a": {"images": {"label": labels, "top1": labels}},                       # all right
               "b": {"images": {"label": labels, "top1": [(x + 1) % 4 for x in labels]}},  # all wrong
               "c": {"summary": {"n": 100, "top1": 0.5}}}                                  # no per-image figures
    text = analysis_lines(reports, {"a": "Model A"})
    assert "**Model A**: test top-1 100.0%" in text and "**b**: test top-1 0.0%" in text
    assert "**c**: test top-1 50.0% (95% CI 40.4%–59.6%, 50 of 100)" in text
    assert "a is better than b on the test set (p < 0.0001" in text and "c is better" not in text
