"""The dashboard's figures: what they leave out and where their parts go."""
from cifar_models.dashboard.plots import MIN_BIN_IMAGES, corruption_curves, reliability_diagram


def _bins(counts):
    return [dict(confidence=(i + 0.5) / len(counts), accuracy=1.0 if c == 1 else 0.5, count=c)
            for i, c in enumerate(counts)]


def test_reliability_leaves_out_bins_too_small_to_mean_anything():
    report = dict(reliability=_bins([1, 0, 50, MIN_BIN_IMAGES, 300]), calibration=dict(temperature=0.8),
                  reliability_calibrated=_bins([0, 2, 40, 400, 9]))
    fig = reliability_diagram(report, "m")
    raw, calibrated = fig.data[1], fig.data[2]
    assert list(raw.customdata) == [50, MIN_BIN_IMAGES, 300]  # the 1-image bin (accuracy 100%) is gone
    assert list(calibrated.customdata) == [40, 400] and calibrated.name == "temperature 0.80"


def test_corruption_legend_sits_below_the_charts_clear_of_the_title():
    report = dict(corruptions=dict(rotation=[0.5] * 5, jpeg=[0.4] * 5),
                  corruption_eval=dict(clean_top1=0.6, test_images=700))
    titles = {f"model{i}": f"a long model title number {i} · from scratch" for i in range(3)}
    fig = corruption_curves({n: report for n in titles}, titles)
    assert fig.layout.legend.y < 0 and fig.layout.legend.orientation == "h"
    assert "700 test images" in fig.layout.title.text
    assert [t.name for t in fig.data if t.showlegend] == list(titles.values())
