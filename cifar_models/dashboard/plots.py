"""Plotly figures for the dashboard. (The only module that imports plotly.)"""
from __future__ import annotations

import plotly.graph_objects as go

from ..common.corruption_specs import TITLES as CORRUPTION_TITLES

COLORS: dict[str, str] = {}  # checkpoint name -> colour, set once by the app (catalog.model_colors)


def use_colors(colors: dict[str, str]) -> None:
    """Give each checkpoint its colour in every figure (one colour per model, the same everywhere)."""
    COLORS.clear()
    COLORS.update(colors)


def _color(name: str) -> str:
    """A model's colour: the app's choice (`use_colors`), grey for a name it did not give."""
    return COLORS.get(name, "#555555")


BAR_HEIGHT, CURVE_HEIGHT = 300, 360


def _layout(fig: go.Figure, height: int, **kw) -> go.Figure:
    kw.setdefault("margin", dict(l=10, r=20, t=40, b=40))
    fig.update_layout(height=height, template="plotly_white", font=dict(size=13), **kw)
    return fig


def topk_bars(top: list[tuple[str, float]], model: str, title: str) -> go.Figure:
    """Horizontal bars of the top-k classes, best on top, on a fixed 0-1 axis."""
    names = [n.replace("_", " ") for n, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", marker_color=_color(model),
                           text=[f"{p:.1%}" for p in probs], textposition="auto", hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_xaxes(range=[0, 1], dtick=0.2, tickformat=".0%", title="probability")
    fig.update_yaxes(automargin=True)
    return _layout(fig, BAR_HEIGHT, title=dict(text=title, x=0.02))


def training_curves(histories: dict[str, list[dict]], metric: str) -> go.Figure:
    """One chart, both models: train (dashed) and validation (solid) `metric` ('acc' or 'loss') per epoch."""
    fig = go.Figure()
    for model, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        for split, dash in (("train", "dash"), ("val", "solid")):
            fig.add_trace(go.Scatter(x=epochs, y=[h[f"{split}_{metric}"] for h in hist], mode="lines+markers",
                                     name=f"{model} {'validation' if split == 'val' else 'train'}",
                                     line=dict(color=_color(model), dash=dash), marker=dict(size=5)))
    label = "accuracy" if metric == "acc" else "loss (cross-entropy)"
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(title=label, tickformat=".0%" if metric == "acc" else None)
    return _layout(fig, CURVE_HEIGHT, title=dict(text=f"{label.split()[0].capitalize()} per epoch", x=0.02),
                   legend=dict(orientation="h", y=-0.25), hovermode="x unified")


MIN_BIN_IMAGES = 10  # a reliability bin with fewer images is left out: its accuracy is noise (1 image: 0 or 100%)


def reliability_diagram(report: dict, model: str) -> go.Figure:
    """Accuracy against confidence per bin (bins of at least MIN_BIN_IMAGES images), before and after
    temperature scaling; the diagonal is perfect."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line=dict(color="#999", dash="dot")))
    cal = report.get("calibration") or {}
    curves = [("raw", report["reliability"], "dash")]
    if report.get("reliability_calibrated"):
        curves.append((f"temperature {cal.get('temperature', 1):.2f}", report["reliability_calibrated"], "solid"))
    for label, bins, dash in curves:
        pts = [b for b in bins if b["count"] >= MIN_BIN_IMAGES]
        fig.add_trace(go.Scatter(x=[b["confidence"] for b in pts], y=[b["accuracy"] for b in pts],
                                 mode="lines+markers", name=label, line=dict(color=_color(model), dash=dash),
                                 customdata=[b["count"] for b in pts],
                                 hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata} images"
                                               "<extra></extra>"))
    fig.update_xaxes(range=[0, 1], title="confidence (top-1 probability)")
    fig.update_yaxes(range=[0, 1], title="accuracy")
    return _layout(fig, CURVE_HEIGHT, title=dict(text=f"Reliability on the test set: {model}", x=0.02),
                   legend=dict(orientation="h", y=-0.25))


def per_class_accuracy(reports: dict[str, dict]) -> go.Figure:
    """Test accuracy per class, both models, with buttons that re-sort the classes inside the chart."""
    names = list(reports)
    classes = list(next(iter(reports.values()))["per_class_accuracy"])
    acc = {n: reports[n]["per_class_accuracy"] for n in names}
    fig = go.Figure([go.Bar(x=[c.replace("_", " ") for c in classes], y=[acc[n][c] for c in classes], name=n,
                            marker_color=_color(n), hovertemplate="%{x}: %{y:.0%}<extra>" + n + "</extra>")
                     for n in names])

    def order(key) -> list[str]:
        return [c.replace("_", " ") for c in sorted(classes, key=key)]

    sorts = [("A-Z", order(lambda c: c))]
    sorts += [(f"by {n}", order(lambda c, n=n: -acc[n][c])) for n in names]
    if len(names) == 2:
        a, b = names
        sorts.append((f"{b} minus {a}", order(lambda c: acc[a][c] - acc[b][c])))
    fig.update_layout(barmode="group", updatemenus=[dict(
        type="buttons", direction="right", x=0, y=1.18, xanchor="left", showactive=True,
        buttons=[dict(label=label, method="relayout", args=[{"xaxis.categoryarray": arr, "xaxis.categoryorder": "array"}])
                 for label, arr in sorts])])
    fig.update_xaxes(categoryorder="array", categoryarray=sorts[1][1] if len(sorts) > 1 else sorts[0][1],
                     tickangle=-60, tickfont=dict(size=10))
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title="test accuracy")
    return _layout(fig, 480, title=dict(text="Per-class test accuracy (sort with the buttons)", x=0.02, y=0.97),
                   legend=dict(orientation="h", y=1.1, x=1, xanchor="right"), margin=dict(l=10, r=20, t=90, b=120))


def corruption_curves(reports: dict[str, dict], titles: dict[str, str] | None = None, cols: int = 3) -> go.Figure:
    """Test top-1 against corruption severity, one small chart per corruption, every model in each
    (severity 0 = the same test images uncorrupted). From the reports' `corruptions` keys."""
    from plotly.subplots import make_subplots

    TITLES = CORRUPTION_TITLES

    reports = {n: r for n, r in reports.items() if r.get("corruptions")}
    names = list(dict.fromkeys(c for r in reports.values() for c in r["corruptions"]))
    rows = max(1, -(-len(names) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[TITLES.get(c, c) for c in names],
                        shared_yaxes=True, vertical_spacing=0.12, horizontal_spacing=0.04)
    for m, (model, r) in enumerate(reports.items()):
        clean = r["corruption_eval"]["clean_top1"]
        for i, c in enumerate(names):
            if c not in r["corruptions"]:
                continue
            acc = [clean] + list(r["corruptions"][c])
            fig.add_trace(go.Scatter(
                x=list(range(len(acc))), y=acc, mode="lines+markers", name=(titles or {}).get(model, model),
                legendgroup=model, showlegend=i == 0, line=dict(color=_color(model)), marker=dict(size=6),
                hovertemplate=f"{model}<br>severity %{{x}}<br>top-1 %{{y:.1%}}<extra>{TITLES.get(c, c)}</extra>"),
                row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(tickvals=list(range(6)), ticktext=["clean", "1", "2", "3", "4", "5"])
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    n = {r["corruption_eval"]["test_images"] for r in reports.values()}
    return _layout(fig, 260 * rows + 80, title=dict(
        text=f"Test top-1 against corruption severity ({', '.join(f'{k:,}' for k in sorted(n))} test images)", x=0.02),
        legend=dict(orientation="h", y=-0.3 / rows, x=0, xanchor="left"), hovermode="closest",  # below: long
        margin=dict(l=10, r=20, t=80, b=70))  # model titles beside the title would run into it


def accuracy_intervals(summary: dict[str, dict], titles: dict[str, str] | None = None) -> go.Figure:
    """Top-1 and top-5 accuracy per model on a person's labelled images, with their 95% (Wilson) intervals as
    error bars: where the bars overlap, the images do not tell the models apart. `summary`: the `user_results`
    summary ({name: {"top1", "top5", "top1_ci95", "top5_ci95", "labelled"}})."""
    names = [n for n, s in summary.items() if s.get("labelled")]
    fig = go.Figure()
    for metric, opacity in (("top1", 1.0), ("top5", 0.45)):
        acc = [summary[n][metric] for n in names]
        lo = [summary[n][f"{metric}_ci95"][0] for n in names]
        hi = [summary[n][f"{metric}_ci95"][1] for n in names]
        fig.add_trace(go.Bar(
            x=[(titles or {}).get(n, n) for n in names], y=acc, name=metric.replace("top", "top-"), opacity=opacity,
            marker_color=[_color(n) for n in names], text=[f"{a:.0%}" for a in acc], textposition="inside",
            error_y=dict(type="data", symmetric=False, array=[h - a for h, a in zip(hi, acc)],
                         arrayminus=[a - low for a, low in zip(acc, lo)], color="#333"),
            customdata=[[low, h, summary[n]["labelled"]] for n, low, h in zip(names, lo, hi)],
            hovertemplate="%{x}: %{y:.1%} (95% CI %{customdata[0]:.1%}–%{customdata[1]:.1%}, "
                          "%{customdata[2]} images)<extra>" + metric + "</extra>"))
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title="accuracy on your labelled images")
    return _layout(fig, CURVE_HEIGHT, barmode="group", title=dict(
        text="Top-1 (solid) and top-5 (light) with 95% confidence intervals", x=0.02),
        legend=dict(orientation="h", y=-0.15))
