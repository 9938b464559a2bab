"""Plotly figures for the dashboard. (The only module that imports plotly.)"""
from __future__ import annotations

import plotly.graph_objects as go

COLORS = {"cnn9": "#E4572E", "efficientnet_b0": "#2E86AB"}
BAR_HEIGHT, CURVE_HEIGHT = 300, 360


def _layout(fig: go.Figure, height: int, **kw) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=10, r=20, t=40, b=40), template="plotly_white",
                      font=dict(size=13), **kw)
    return fig


def topk_bars(top: list[tuple[str, float]], model: str, title: str) -> go.Figure:
    """Horizontal bars of the top-k classes, best on top, on a fixed 0-1 axis."""
    names = [n.replace("_", " ") for n, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", marker_color=COLORS.get(model, "#555"),
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
                                     line=dict(color=COLORS.get(model), dash=dash), marker=dict(size=5)))
    label = "accuracy" if metric == "acc" else "loss (cross-entropy)"
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(title=label, tickformat=".0%" if metric == "acc" else None)
    return _layout(fig, CURVE_HEIGHT, title=dict(text=f"{label.split()[0].capitalize()} per epoch", x=0.02),
                   legend=dict(orientation="h", y=-0.25), hovermode="x unified")
