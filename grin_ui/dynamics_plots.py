"""Plotly views of the unlearning dynamics (grin_ui.dynamics) and of a split–unlearn–merge run (grin_ui.spunge),
for the dashboard's Unlearn tab. Pure functions from the result dicts to figures / table rows.

    curves, tradeoff, scatter = dynamics_figures(result.dynamics)
    rows = spunge_rows(result.spunge)
    fig = distribution_figure(grin_ui.distribution_demo.compare(lm))   # the in- vs out-of-distribution preset
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from grin_ui.dynamics import COLORS, holdout_level
from grin_ui.plots import _layout, empty_figure


def dynamics_figures(dyn: dict | None) -> tuple[go.Figure, go.Figure, go.Figure]:
    """(per-example curves with each set's mean, forget-vs-retain trade-off over the steps, steps-to-forget against
    memorization). Empty figures with a hint when nothing was recorded."""
    if not dyn or not dyn.get("steps"):
        hint = "Tick “Record dynamics” and run unlearning to see per-example curves."
        return empty_figure(hint), empty_figure(hint), empty_figure(hint)
    steps, sets = dyn["steps"], dyn["sets"]
    curves = go.Figure()
    for name, s in sets.items():
        c = COLORS.get(name, "#9467bd")
        for e in s["examples"]:
            curves.add_trace(go.Scatter(x=steps, y=e["logprob"], mode="lines", line=dict(color=c, width=1),
                                        opacity=0.35, name=name, legendgroup=name, showlegend=False,
                                        hovertemplate=f"{e['label']}<br>step %{{x}}: %{{y:.3f}}<extra>{name}</extra>"))
        curves.add_trace(go.Scatter(x=steps, y=s["mean"], mode="lines+markers", line=dict(color=c, width=3),
                                    name=f"{name} (mean)", legendgroup=name))
    curves.update_xaxes(title="step")
    curves.update_yaxes(title="answer log-prob per token (nats)")
    _layout(curves, "Per-example answer log-probability over the steps", legend=dict(orientation="h", y=-0.25))
    f, r = (sets.get("forget") or {}).get("mean"), (sets.get("retain") or {}).get("mean")
    trade = go.Figure()
    if f and r:
        trade.add_trace(go.Scatter(x=f, y=r, mode="lines+markers+text", text=[str(s) for s in steps],
                                   textposition="top center", name="step", line=dict(color="#1f77b4")))
        trade.update_xaxes(title="forget log-prob per token (nats) — lower is more forgotten")
        trade.update_yaxes(title="retain log-prob per token (nats)")
        _layout(trade, "Trade-off over the steps (labels: step)")
    else:
        trade = empty_figure("The trade-off curve needs a retain set.")
    fx = [e for e in dyn.get("forget_examples") or [] if e["memorization"] is not None]
    if fx:
        top = max([e["steps_to_forget"] or 0 for e in fx] + [steps[-1]])
        done = [e for e in fx if e["steps_to_forget"] is not None]
        never = [e for e in fx if e["steps_to_forget"] is None]
        scatter = go.Figure()
        diff = [e.get("difficulty") for e in done]
        marker = dict(color=COLORS["forget"], size=10)
        if diff and all(d is not None for d in diff):  # a reference model was scored: colour = difficulty
            marker = dict(color=diff, colorscale="Viridis", size=11, showscale=True,
                          colorbar=dict(title="difficulty"))
        scatter.add_trace(go.Scatter(x=[e["memorization"] for e in done], y=[e["steps_to_forget"] for e in done],
                                     mode="markers", name="forgotten", text=[e["label"] for e in done],
                                     marker=marker))
        if never:
            scatter.add_trace(go.Scatter(x=[e["memorization"] for e in never], y=[top] * len(never), mode="markers",
                                         name="not at the holdout level", text=[e["label"] for e in never],
                                         marker=dict(color="#7f7f7f", size=10, symbol="x")))
        level = holdout_level(dyn)
        if level is not None:
            scatter.add_vline(x=level, line=dict(color="#7f7f7f", dash="dash"),
                              annotation_text="holdout level (never known)", annotation_position="top")
        scatter.update_xaxes(title="memorization: original answer probability per token")
        scatter.update_yaxes(title="steps to reach the holdout level")
        _layout(scatter, "Steps to forget vs memorization (one point per forget example)")
    else:
        scatter = empty_figure("Steps to forget need a forget set (and a holdout set for the level).")
    return curves, trade, scatter


def dynamics_summary(dyn: dict | None) -> str:
    """One markdown line of the run's single numbers (grin_ui.dynamics.summarize)."""
    s = (dyn or {}).get("summary")
    if not s:
        return ""
    f = lambda v: "—" if v is None else f"{v:.3g}"  # noqa: E731
    return (f"**Dynamics:** forget at the holdout level at step {f(s['forget_step'])} (retain log-prob change there "
            f"{f(s['retain_change_at_forget'])}, neighbours {f(s['neighbours_change_at_forget'])} nats/token); "
            f"selectivity area {f(s['selectivity_area'])} nats/token; memorization vs steps-to-forget Spearman "
            f"{f(s['memorization_spearman'])}.")


SPUNGE_HEADERS = ["state", "subset", "examples", "weights selected", "weights changed", "steps run", "stopped at",
                  "answer NLL per subset (nats)"]


def spunge_rows(sp: dict | None) -> list[list]:
    """One row per subset run and one for the merged delta, with every subset's answer NLL under that state."""
    if not sp:
        return []
    states = (sp.get("nll") or {}).get("states") or {}
    fmt = lambda d: ", ".join(f"{k} {v:.2f}" for k, v in (d or {}).items() if v is not None)  # noqa: E731
    rows = [["original", "—", sum(s["n"] for s in sp["subsets"]), "—", "—", "—", "—", fmt(states.get("original"))]]
    for s in sp["subsets"]:
        rows.append([f"run {s['attribute']}", s["attribute"], s["n"], s["selected"], s["changed"], s["steps_run"],
                     s["stopped_at"] if s["stopped_at"] is not None else "—", fmt(states.get(f"run {s['attribute']}"))])
    rows.append([f"merged ({sp['merge']})", "all", sum(s["n"] for s in sp["subsets"]), sp["union_selected"],
                 sp["merged_changed"], "—", "—", fmt(states.get("merged"))])
    return rows


def distribution_figure(res: dict | None) -> go.Figure:
    """The in- vs out-of-distribution preset (grin_ui.distribution_demo) side by side: per arm, each set's mean answer
    log-probability per token over the steps, the holdout's (facts never known) dashed, and a dotted line where the
    forget set reached the holdout level."""
    if not res or not res.get("arms"):
        return empty_figure("Click the button to run the in- vs out-of-distribution preset.")
    names = list(res["arms"])
    fig = make_subplots(rows=1, cols=len(names), shared_yaxes=True, subplot_titles=[
        f"{n} forget set ({res['arms'][n]['sizes'].get('forget')} facts)" for n in names])
    for col, name in enumerate(names, start=1):
        dyn = res["arms"][name]["dynamics"] or {}
        steps = dyn.get("steps") or []
        for set_name, s in (dyn.get("sets") or {}).items():
            fig.add_trace(go.Scatter(x=steps, y=s["mean"], mode="lines+markers", name=set_name, legendgroup=set_name,
                                     showlegend=col == 1, line=dict(color=COLORS.get(set_name, "#9467bd"), width=3,
                                                                    dash="dash" if set_name == "holdout" else None)),
                          row=1, col=col)
        at = ((dyn.get("summary") or {}).get("forget_step"))
        if at is not None:
            fig.add_vline(x=at, line=dict(color=COLORS["forget"], dash="dot"), row=1, col=col)
        fig.update_xaxes(title="step", row=1, col=col)
    fig.update_yaxes(title="answer log-prob per token (nats)", row=1, col=1)
    c = res["config"]
    _layout(fig, f"Gradient ascent, same budget ({c['steps']} steps, lr {c['lr']:g}): in- vs out-of-distribution "
                 "forget set", height=420, legend=dict(orientation="h", y=-0.2))
    fig.update_layout(margin=dict(t=80))
    return fig
