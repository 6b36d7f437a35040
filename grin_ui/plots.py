"""Plotly figures for the dashboard and the docs: pure functions from results (plain numbers) to figures.

    fig = block_module_heatmap(blocks, modules, values, title="mean log10 GRI score")
    fig = score_histogram(edges, counts, threshold=-1.2)
    fig = loss_curves(history)                        # [{step, forget_loss, retain_loss, loss}, ...]
    fig = metrics_bars({"original": ev0, "unlearned": ev1, "nf4 · unlearned": ev2})
    fig = bin_ratio_histogram(survival["ratio_hist"])   # |Δw| / bin width with the line at 0.5

No function here computes a result; each one draws the numbers it is given (NaN / None cells stay empty).
"""

from __future__ import annotations

import math
from typing import Sequence

import plotly.graph_objects as go

from grin_ui.svgplot import finite_or_none

FONT = dict(family="system-ui, -apple-system, Segoe UI, sans-serif", size=13)
SET_COLORS = {"forget": "#d62728", "retain": "#1f77b4", "holdout": "#7f7f7f"}
STATE_COLORS = ["#4c78a8", "#e45756", "#f58518", "#72b7b2", "#54a24b", "#b279a2", "#9d755d", "#bab0ac"]
METRIC_LABELS = {
    "answer_hit_rate": "answer hit rate",
    "rougeL_recall": "ROUGE-L recall",
    "answer_prob": "answer probability",
    "truth_ratio": "truth ratio",
    "nll": "NLL",
}

SHORT_LABELS = {"answer_hit_rate": "hit rate", "rougeL_recall": "ROUGE-L", "answer_prob": "answer prob.",
                "truth_ratio": "truth ratio", "nll": "NLL"}


def _layout(fig: go.Figure, title: str, height: int = 360, **kw) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=15)),
        font=FONT,
        height=height,
        margin=dict(l=60, r=20, t=50, b=50),
        template="plotly_white",
        **kw,
    )
    return fig


_clean = finite_or_none  # a number to plot, or None for missing / NaN / inf


def empty_figure(message: str, height: int = 300) -> go.Figure:
    """A blank figure carrying a message (what to do to fill it)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=14, color="#666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "", height=height)


def block_module_heatmap(blocks: Sequence[int], modules: Sequence[str], values, title: str,
                         colorbar: str = "", zmin: float | None = None, zmax: float | None = None,
                         colorscale: str = "Viridis", fmt: str = ".3g") -> go.Figure:
    """Heatmap with one row per transformer block (block 0 on top) and one column per module type.

    ``values``: nested sequence [len(blocks)][len(modules)] (or a 2-D array/tensor); missing cells None/NaN.
    """
    rows = values.tolist() if hasattr(values, "tolist") else values
    z = [[_clean(v) for v in row] for row in rows]
    text = [["" if v is None else format(v, fmt) for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(modules), y=[f"block {b}" for b in blocks], text=text, colorscale=colorscale,
        zmin=zmin, zmax=zmax, colorbar=dict(title=dict(text=colorbar, side="right")),
        hovertemplate="%{y} · %{x}<br>" + (colorbar or "value") + ": %{text}<extra></extra>",
        xgap=1, ygap=1,
    ))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", side="bottom")
    return _layout(fig, title, height=max(300, 60 + 22 * len(list(blocks))))


def score_heatmap(blocks, modules, values, stat: str = "mean_log10") -> go.Figure:
    label = stat.replace("_log10", " log10").replace("_", " ")
    return block_module_heatmap(blocks, modules, values, f"Influence (GRI) score per block × module — {label}",
                                colorbar="log10 score", colorscale="Viridis")


def density_heatmap(blocks, modules, values, sparsity: float | None = None) -> go.Figure:
    """``values``: fraction (0..1) of each block × module's weights selected by the mask."""
    pct = [[None if _clean(v) is None else 100 * float(v) for v in row]
           for row in (values.tolist() if hasattr(values, "tolist") else values)]
    title = "Selected weights per block × module (%)"
    if sparsity is not None:
        title += f" at {100 * sparsity:.3g} % sparsity"
    return block_module_heatmap(blocks, modules, pct, title, colorbar="% selected", zmin=0, colorscale="Reds")


def survival_heatmap(blocks, modules, values, kind: str = "", scale_only=None, share=None,
                     cosine=None) -> go.Figure:
    """``values``: fraction (0..1) of the changed weights in each cell whose quantization code moves at the original
    block scale (:func:`grin_ui.survival.survival_map` ``values``). Optional grids of the same shape, shown on hover:
    ``scale_only`` (fraction whose dequantized value moves only through a moved block scale), ``share`` (share of
    the update that survives, ⟨ΔQ, Δθ⟩ / ‖Δθ‖²) and ``cosine`` (⟨ΔQ, Δθ⟩ / (‖ΔQ‖·‖Δθ‖))."""
    def rows(grid, scale=1.0):
        if grid is None:
            return [[None] * len(list(modules)) for _ in blocks]
        return [[None if _clean(v) is None else scale * float(v) for v in row]
                for row in (grid.tolist() if hasattr(grid, "tolist") else grid)]

    z = rows(values, 100.0)
    title = "Changed weights whose quantization code moves (%)"
    if kind:
        title += f" — {kind}"
    fig = block_module_heatmap(blocks, modules, z, title, colorbar="% surviving", zmin=0, zmax=100,
                               colorscale="RdYlGn")
    if scale_only is not None or share is not None or cosine is not None:
        extra = zip(rows(scale_only, 100.0), rows(share), rows(cosine))
        cell = lambda v: "—" if v is None else format(v, ".3g")  # noqa: E731
        fig.data[0].customdata = [[[cell(a), cell(b), cell(c)] for a, b, c in zip(r1, r2, r3)]
                                  for r1, r2, r3 in extra]
        fig.data[0].hovertemplate = ("%{y} · %{x}<br>code moves: %{text} %<br>moved by the block scale only: "
                                     "%{customdata[0]} %<br>share of the update surviving: %{customdata[1]}"
                                     "<br>cosine(ΔQ, Δw): %{customdata[2]}<extra></extra>")
    return fig


def bin_ratio_histogram(hists, title: str = "Size of each change relative to its quantization bin") -> go.Figure:
    """Histogram of |Δw| / bin width over the changed weights (``ratio_hist`` of
    :func:`grin_ui.survival.survival_map`: "log10_edges", "counts", "below", "above", "share_at_least_half").
    ``hists``: one such dict, or {label: dict} to overlay several (e.g. a full fine-tune and a GRIN run). x is
    log10 of the ratio; the dashed line at 0.5 marks half a bin: changes left of it mostly keep their code (are
    rounded away), changes right of it mostly move it (survive)."""
    if not hists:
        return empty_figure("Run a probe to see how large the changes are relative to the quantization bins.")
    if "counts" in hists:
        hists = {"": hists}
    half = math.log10(0.5)
    fig = go.Figure()
    for i, (label, h) in enumerate(hists.items()):
        edges = [float(e) for e in h["log10_edges"]]
        counts = [int(c) for c in h["counts"]]
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        color = (["#9e9e9e" if c < half else "#2ca02c" for c in centers] if len(hists) == 1
                 else STATE_COLORS[i % len(STATE_COLORS)])
        name = label or "changed weights"
        share = _clean(h.get("share_at_least_half"))
        if share is not None:
            name += f" ({100 * share:.1f} % ≥ 0.5)"
        fig.add_trace(go.Bar(x=centers, y=counts, width=[b - a for a, b in zip(edges[:-1], edges[1:])],
                             marker_color=color, name=name, opacity=0.85 if len(hists) == 1 else 0.6,
                             hovertemplate="|Δw| / bin ≈ 10^%{x:.2f}<br>%{y:,} weights<extra>" + (label or "")
                             + "</extra>"))
    fig.add_vline(x=half, line=dict(color="#d62728", width=2, dash="dash"), annotation_text="half a bin (0.5)",
                  annotation_position="top right", annotation_font=dict(color="#d62728"))
    lo = min(float(h["log10_edges"][0]) for h in hists.values())
    hi = max(float(h["log10_edges"][-1]) for h in hists.values())
    ticks = list(range(math.ceil(lo), math.floor(hi) + 1))
    fig.update_xaxes(title="|Δw| / bin width at the weight (log scale)", tickvals=ticks,
                     ticktext=[f"{10.0 ** t:g}" for t in ticks])
    fig.update_yaxes(title="changed weights")
    return _layout(fig, title, bargap=0, barmode="overlay", showlegend=True, legend=dict(orientation="h", y=-0.3))


def score_histogram(edges: Sequence[float], counts: Sequence[float], threshold: float | None = None,
                    selected: int | None = None, total: int | None = None) -> go.Figure:
    """Bar histogram of log10 scores (``len(edges) == len(counts) + 1``), log-count axis, with the mask threshold
    as a vertical line (weights right of it are selected)."""
    edges = [float(e) for e in edges]
    counts = [float(c) for c in counts]
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=centers, y=counts, width=widths, marker_color="#4c78a8", name="weights",
                           hovertemplate="log10 score %{x:.3g}<br>%{y:,} weights<extra></extra>"))
    if threshold is not None and _clean(threshold) is not None:
        label = f"threshold {threshold:.3g}"
        if selected is not None:
            label += f" · {selected:,} selected" + (f" of {total:,}" if total else "")
        fig.add_vline(x=float(threshold), line=dict(color="#d62728", width=2, dash="dash"),
                      annotation_text=label, annotation_position="top left",
                      annotation_font=dict(color="#d62728"))
    fig.update_xaxes(title="log10 GRI score")
    fig.update_yaxes(title="weights", type="log")
    return _layout(fig, "Distribution of log10 scores", bargap=0)


def loss_curves(history: Sequence[dict], title: str = "Unlearning losses") -> go.Figure:
    """Forget and retain loss per step (and the total objective when present). When the stop-when-forgotten rule
    ran (entries with a "check", grin_ui.stopping), its checks go on a second axis — the forget answers' NLL
    against the reference level (holdout or wrong answers) — and the stopping step is marked."""
    if not history:
        return empty_figure("Run unlearning to see the loss curves.")
    steps = [h.get("step", i) for i, h in enumerate(history)]
    fig = go.Figure()
    for key, name, color, dash in (("forget_loss", "forget loss", SET_COLORS["forget"], None),
                                   ("retain_loss", "retain loss", SET_COLORS["retain"], None),
                                   ("loss", "objective", "#555", "dot")):
        ys = [_clean(h.get(key)) for h in history]
        if any(y is not None for y in ys):
            fig.add_trace(go.Scatter(x=steps, y=ys, mode="lines+markers", name=name,
                                     line=dict(color=color, dash=dash), marker=dict(size=5)))
    checks = [h["check"] for h in history if h.get("check")]
    if checks:
        xs = [c["step"] for c in checks]
        fig.add_trace(go.Scatter(x=xs, y=[_clean(c.get("forget_nll")) for c in checks], yaxis="y2",
                                 mode="lines+markers", name="check: forget answer NLL",
                                 line=dict(color=SET_COLORS["forget"], dash="dash"), marker=dict(symbol="diamond")))
        if any(c.get("reference_nll") is not None for c in checks):
            fig.add_trace(go.Scatter(x=xs, y=[_clean(c.get("reference_nll")) for c in checks], yaxis="y2",
                                     mode="lines", name="check: reference level (never-known facts)",
                                     line=dict(color="#888", dash="dash")))
        stop = next((c["step"] for c in checks if c.get("stop")), None)
        if stop is not None:
            fig.add_vline(x=stop, line=dict(color="#2a7", width=2),
                          annotation_text=f"stopped: forgotten at step {stop}", annotation_position="top left")
        fig.update_layout(yaxis2=dict(title="answer NLL (nats/token)", overlaying="y", side="right",
                                      showgrid=False))
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="loss")
    return _layout(fig, title, legend=dict(orientation="h", y=-0.25))


def metrics_bars(states: dict[str, dict], metrics: Sequence[str] = ("answer_hit_rate", "rougeL_recall",
                                                                       "answer_prob"),
                 sets: Sequence[str] = ("forget", "retain"), title: str = "Metrics") -> go.Figure:
    """Grouped bars: one group per (set, metric), one bar per model state ("original", "unlearned",
    "nf4 · unlearned", ...). ``states[state][set][metric]`` is a number or None."""
    if not states:
        return empty_figure("Evaluate the models to see the metrics.")
    x_labels = [f"{s}<br>{SHORT_LABELS.get(m, m)}" for s in sets for m in metrics]
    fig = go.Figure()
    for i, (state, ev) in enumerate(states.items()):
        ys = [_clean(((ev or {}).get(s) or {}).get(m)) for s in sets for m in metrics]
        fig.add_trace(go.Bar(x=x_labels, y=ys, name=state, marker_color=STATE_COLORS[i % len(STATE_COLORS)],
                             text=["" if y is None or len(states) > 2 else f"{y:.2f}" for y in ys],
                             textposition="outside", textfont=dict(size=10), cliponaxis=False,
                             hovertemplate=state + "<br>%{x}: %{y:.4g}<extra></extra>"))
    fig.update_xaxes(tickangle=0)
    fig.update_yaxes(range=[0, 1.15], title="value (higher = more knowledge)")
    return _layout(fig, title, barmode="group", legend=dict(orientation="h", y=-0.3), height=400)


def interval_bars(groups: dict[str, dict], metrics: dict[str, str], title: str = "Mean and 95 % interval"
                  ) -> go.Figure:
    """One group per metric (``metrics``: key -> label), one bar per entry of ``groups`` (label -> {metric: {mean,
    lo, hi}} as grin_ui.selection_compare.interval gives), the 95 % interval as error bars (none for one value)."""
    if not groups:
        return empty_figure("Nothing to compare yet.")
    fig = go.Figure()
    for i, (label, vals) in enumerate(groups.items()):
        ivs = [(vals.get(m) or {}) for m in metrics]
        ys = [_clean(iv.get("mean")) for iv in ivs]
        up = [None if iv.get("hi") is None else iv["hi"] - iv["mean"] for iv in ivs]
        down = [None if iv.get("lo") is None else iv["mean"] - iv["lo"] for iv in ivs]
        fig.add_trace(go.Bar(x=list(metrics.values()), y=ys, name=label,
                             marker_color=STATE_COLORS[i % len(STATE_COLORS)],
                             error_y=dict(type="data", array=up, arrayminus=down,
                                          visible=any(u is not None for u in up)),
                             hovertemplate=label + "<br>%{x}: %{y:.3g}<extra></extra>"))
    fig.update_yaxes(title="mean over seeds", rangemode="tozero")
    return _layout(fig, title, barmode="group", legend=dict(orientation="h", y=-0.3), height=420)


def recovery_bars(recovery: dict[str, dict], title: str = "Forgotten knowledge recovered by quantization (%)"
                  ) -> go.Figure:
    """``recovery[probe][metric]``: percent or None (undefined); one group per metric, one bar per probe."""
    if not recovery:
        return empty_figure("Run a quantization probe to see the recovery.")
    metrics = sorted({m for v in recovery.values() for m in v})
    fig = go.Figure()
    for i, (probe, vals) in enumerate(recovery.items()):
        ys = [_clean(vals.get(m)) for m in metrics]
        fig.add_trace(go.Bar(x=[METRIC_LABELS.get(m, m) for m in metrics], y=ys, name=probe,
                             marker_color=STATE_COLORS[(i + 2) % len(STATE_COLORS)],
                             text=["—" if y is None else f"{y:.0f} %" for y in ys], textposition="outside",
                             cliponaxis=False))
    fig.add_hline(y=0, line=dict(color="#333", width=1))
    fig.update_yaxes(title="recovery %")
    return _layout(fig, title, barmode="group", legend=dict(orientation="h", y=-0.25))


def reorder_modules(modules: Sequence[str], values, order: Sequence[str]) -> tuple[list[str], list[list]]:
    """Put the module columns of a block × module grid in ``order`` (e.g. the model's q, k, v, o, gate, up, down);
    modules not in ``order`` keep their place after those."""
    rows = values.tolist() if hasattr(values, "tolist") else values
    ranked = sorted(range(len(modules)), key=lambda i: (order.index(modules[i]) if modules[i] in order
                                                          else len(order) + i))
    return [modules[i] for i in ranked], [[row[i] for i in ranked] for row in rows]
