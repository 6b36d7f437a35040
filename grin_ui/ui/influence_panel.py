"""Step 4 — Influence map: GRI scores per weight, where they concentrate, and which weights the mask selects."""

import gradio as gr

from grin_ui import plots
from grin_ui import session as S
from grin_ui.config import SCOPES, MaskConfig, RunConfig
from grin_ui.ui.common import cancel_button, explain, fmt, friendly, notices, reporter, session_of

INTRO = """**Step 4 — the influence map.** For every weight, GRIN compares how much it matters to the data to
forget with how much it matters to the data to keep: **score = |forget gradient| / (|retain gradient| + ε)**
(one backward pass over each set, no training). Weights with a high score carry the forget set specifically; GRIN
edits only those. The heatmaps show where they sit (transformer block × module type); the histogram shows the
log10 scores with the **threshold** of the current mask. Move the **sparsity** slider or switch the **scope**: the
selection updates at once, without recomputing gradients.

**What the evidence says** (README, "Does the selection earn its place?"; bundled model, 3 built-in examples ×
5 seeds): at an equal budget and a learning rate swept for each selection, the GRI mask has **not** beaten a random
mask of the same size. On the near-neighbour example it kept 44 % of the neighbour capitals against 54 % for a
random mask (difference not significant, p 0.10) and 69 % for the largest weights; on the other two examples the
selections hardly differ. Check it on your own data with **Compare with baselines** in the Unlearn tab."""

SCOPE_HELP = {"global": "one threshold over all scored weights", "tensor": "top p of each weight matrix",
              "row": "top p of the output rows of each matrix (by their mean score)"}
STATS = {"mean log10": "mean_log10", "median log10": "median_log10", "max log10": "max_log10"}
TOP_HEADERS = ["tensor", "block", "module", "weights", "mean log10", "median log10", "max log10", "selected %"]


def mask_summary(mask, seconds: float | None = None) -> str:
    text = (f"**{mask.selected:,} of {mask.total:,} scored weights selected** ({100 * mask.density:.3g} %, "
            f"scope *{mask.scope}*: {SCOPE_HELP.get(mask.scope, '')}); "
            f"{len(mask.masks)} weight matrices touched, the others stay frozen.")
    if mask.threshold is not None:
        text += f" Threshold: log10 score ≥ {mask.threshold:.3f}."
    if seconds is not None:
        text += f" (mask built in {1000 * seconds:.0f} ms)"
    return text


class InfluencePanel:
    def __init__(self, store: S.SessionStore):
        self.store = store

    def _mask_cfg(self, sparsity_pct: float, scope: str) -> RunConfig:
        return RunConfig(mask=MaskConfig(selector="grin", sparsity=float(sparsity_pct) / 100.0, scope=scope))

    def _mask_views(self, s: S.Session, scores, mask, seconds=None):
        blocks, modules, values = mask.block_module_density()
        modules, values = plots.reorder_modules(modules, values, self.store.base(s).lm.summary.modules)
        edges, counts = scores.log10_histogram(60)
        density = mask.density_by_tensor()
        top = [[r["name"], r["block"], r["module"], f"{r['numel']:,}", fmt(r["mean_log10"]), fmt(r["median_log10"]),
                fmt(r["max_log10"]), fmt(100 * density.get(r["name"], 0.0))]
               for r in scores.tensor_table()[:20]]
        return (plots.density_heatmap(blocks, modules, values, mask.sparsity),
                plots.score_histogram(edges, counts, mask.threshold, mask.selected, mask.total),
                top, mask_summary(mask, seconds))

    def _score_map(self, s: S.Session, scores, stat: str):
        key = STATS.get(stat, "mean_log10")
        blocks, modules, values = scores.block_module_matrix(key)
        order = self.store.base(s).lm.summary.modules
        modules, values = plots.reorder_modules(modules, values, order)
        return plots.score_heatmap(blocks, modules, values, key)

    @friendly
    def compute(self, sparsity_pct: float, scope: str, stat: str, request: gr.Request, progress=gr.Progress()):
        """Compute GRI scores for the session's forget and retain sets, then the mask and every view."""
        import time

        s = session_of(self.store, request)
        cfg = self._mask_cfg(sparsity_pct, scope)
        with s.action("scoring"):
            t0 = time.perf_counter()
            scores = S.compute_scores(self.store, s, progress=reporter(progress))
            took = time.perf_counter() - t0
            mask = S.update_mask(self.store, s, cfg)
        # the views use this call's scores, even if memory pressure releases the session's copy meanwhile
        density, hist, top, summary = self._mask_views(s, scores, mask)
        head = (f"Scored **{scores.total:,} weights** with {scores.forget_examples} forget and "
                f"{scores.retain_examples} retain examples in {took:.1f} s (ε = {scores.eps:.3g}).\n\n")
        return self._score_map(s, scores, stat), density, hist, top, head + summary, sparsity_pct, scope

    @friendly
    def update(self, sparsity_pct: float, scope: str, request: gr.Request):
        """New sparsity or scope: rebuild the mask from the stored scores (no gradients) and refresh the views."""
        import time

        s = session_of(self.store, request)
        notices(s)
        scores = s.scores
        if scores is None:
            msg = "*Compute the scores first (button above); the slider then updates the selection instantly.*"
            return (gr.skip(), gr.skip(), gr.skip(), msg, sparsity_pct, scope)
        t0 = time.perf_counter()
        mask = S.update_mask(self.store, s, self._mask_cfg(sparsity_pct, scope))
        density, hist, top, summary = self._mask_views(s, scores, mask, time.perf_counter() - t0)
        return density, hist, top, summary, sparsity_pct, scope

    @friendly
    def heatmap(self, stat: str, request: gr.Request):
        s = session_of(self.store, request)
        scores = s.scores
        s.require("scores")
        return self._score_map(s, scores, stat)

    def build(self):
        explain(INTRO)
        with gr.Row():
            self.compute_btn = gr.Button("Compute influence scores", variant="primary", scale=2)
            cancel_button(self.store, "cancel_scoring")
            self.sparsity = gr.Slider(0.01, 10, value=1.0, step=0.01, label="Sparsity: % of scored weights selected",
                                      scale=3)
            self.scope = gr.Radio(list(SCOPES), value="global", label="Mask scope", scale=2)
        self.summary = gr.Markdown("*No scores yet.*", label="Selection summary")
        with gr.Row():
            with gr.Column():
                self.stat = gr.Radio(list(STATS), value="mean log10", label="Score statistic per block × module")
                self.score_map = gr.Plot(plots.empty_figure("Compute the scores to see the map."),
                                         label="Influence score map")
            with gr.Column():
                self.density_map = gr.Plot(plots.empty_figure("Compute the scores to see the selection."),
                                           label="Selected-weight density map")
        self.histogram = gr.Plot(plots.empty_figure("Compute the scores to see the distribution."),
                                 label="Score histogram")
        self.top = gr.Dataframe(headers=TOP_HEADERS, label="Top tensors by mean log10 score", interactive=False,
                                max_height=360)

    def wire(self, extra_outputs: list):
        """``extra_outputs``: the Unlearn panel's sparsity and scope, kept in step with this panel's."""
        outs = [self.density_map, self.histogram, self.top, self.summary] + extra_outputs
        self.compute_btn.click(self.compute, [self.sparsity, self.scope, self.stat],
                               [self.score_map] + outs, api_name="compute_scores")
        self.sparsity.release(self.update, [self.sparsity, self.scope], outs, api_name="update_mask",
                              concurrency_limit=None, show_progress="minimal")
        self.scope.change(self.update, [self.sparsity, self.scope], outs, api_name="update_scope",
                          concurrency_limit=None, show_progress="minimal")
        self.stat.change(self.heatmap, self.stat, self.score_map, api_name="score_map", concurrency_limit=None)
