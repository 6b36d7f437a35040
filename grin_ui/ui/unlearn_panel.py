"""Step 5 — Unlearn: masked unlearning with live loss curves, cancel, reset, and the baseline comparison."""

import threading

import gradio as gr

from grin_ui import distribution_demo as DD
from grin_ui import plots
from grin_ui import session as S
from grin_ui.config import MERGES, OBJECTIVES, RETAIN_LOSSES, SCOPES, SELECTORS, MaskConfig, NoiseConfig, \
    RunConfig, SpungeConfig, UnlearnConfig
from grin_ui.dynamics_plots import SPUNGE_HEADERS, distribution_figure, dynamics_figures, dynamics_summary, \
    spunge_rows
from grin_ui.ui.common import cancel_button, explain, fmt, friendly, notices, reporter, session_of

INTRO = """**Step 5 — unlearn.** GRIN adds a little noise to the selected weights, then fine-tunes **only those
weights** with an unlearning objective while a *retain term* keeps the retain answers. Every other weight stays
bit-identical. **IDK** (default) teaches a refusal ("I don't know.") to the forget questions — measured on the
built-in examples, it forgets precisely and fluently, where pushing the answers down (NPO, gradient ascent) also
erased facts of the same kind and left word salad. **Stop when forgotten** (default on) treats the steps as a
budget: every few steps it checks the forget set and stops once the greedy answers no longer give the facts and the
retain answers are back to their level before unlearning; the curves show the checks and the stopping step.
**Compare with baselines** runs the same objective and budget with other selections — GRI without noise, a random mask
of the same size, forget-only saliency, the largest weights, no mask — each at its learning rate relative to GRIN's as
`benchmarks/compare.py`'s sweep chose it (no mask: 1/400, every weight moves; forget-only saliency: 1/8) — each at
several seeds (the random draw, the noise and the batch order change), and shows the mean with its 95 % interval.
`benchmarks/compare.py` runs the same comparison on the built-in examples over five seeds."""

OBJECTIVE_HELP = {"npo": "NPO", "simnpo": "SimNPO", "grad_ascent": "gradient ascent", "grad_diff": "gradient difference",
                  "idk": "IDK (train a refusal)", "idk_npo": "IDK + NPO (a refusal; then, where the answers stay likelier than facts "
                  "never known, the fact pushed down to them — the default)",
                  "flat": "FLAT (forget data only)"}
BASELINE_HEADERS = ["selection", "learning rate", "seeds", "weights selected", "forget hit % ↓", "retain kept % ↑",
                    "neighbours kept % ↑", "kept answers end % ↑", "forget gibberish % ↓", "seconds per run"]
BASELINE_BARS = {"forget_hit": "forget hit rate ↓", "retain_kept": "retain kept ↑", "neighbours_kept": "neighbours kept ↑"}
POLL_S = 0.5
PRESET_INTRO = f"""**In- vs out-of-distribution forgetting (Baluta et al. 2024).** One click runs gradient ascent twice
from the original model, with the same mask settings, learning rate ({DD.LR:g}) and budget ({DD.STEPS} steps), on
built-in facts the bundled model knows (world-capitals): once on **8 capitals** — the same kind as most of the facts
that must stay (*in-distribution*) — and once on **8 facts of other kinds** (solar system, nature and geography) of
which no kept fact is (*out-of-distribution*). Every {DD.EVERY} steps it records each example's answer
log-probability. The question: does forgetting data like the kept data cost more of the kept data, and does data
unlike it take more steps? Your own data and unlearning are not touched. Takes a few minutes on a CPU."""
PRESET_HEADERS = ["arm", "forget examples", *[h for _, h in DD.SUMMARY_COLUMNS]]


def run_config(objective, selector, sparsity_pct, scope, noise, lr, steps, alpha, retain_loss, seed,
               stop=True, split=False, merge="ties", dynamics_every=0) -> RunConfig:
    return RunConfig(
        mask=MaskConfig(selector=selector, sparsity=float(sparsity_pct) / 100.0, scope=scope),
        noise=NoiseConfig(scale=float(noise)),
        unlearn=UnlearnConfig(objective=objective, lr=float(lr), steps=int(steps), alpha=float(alpha),
                              retain_loss=retain_loss, stop_when_forgotten=bool(stop),
                              dynamics_every=int(dynamics_every or 0)),
        seed=int(seed),
        spunge=SpungeConfig(split_by="attribute" if split else None, merge=merge),
    )


def run_summary(res) -> str:
    if res.cancelled:
        return "**Cancelled.** The model was rolled back; your previous result (if any) is unchanged."
    m = res.mask
    t = " · ".join(f"{k} {v:.1f} s" for k, v in res.timings.items())
    last = res.history[-1] if res.history else {}
    text = (f"**Done.** {res.delta.nnz:,} weights in {len(res.delta.entries)} matrices may have changed "
            f"({100 * m.density:.3g} % of {m.total:,} scored, selector *{m.selector}*, scope *{m.scope}*). ")
    if last:
        text += f"Final forget term {fmt(last.get('forget_loss'))}, retain loss {fmt(last.get('retain_loss'))}. "
    st = getattr(res, "stopping", None)
    if st:
        if st.get("stopped_at"):
            rule = str(st.get("rule", "")).removeprefix("stop when forgotten (").removesuffix(")")
            text += (f"Stopped when forgotten at step {st['stopped_at']} of a budget of {st['budget_steps']} "
                     f"({rule}; reference: {st['reference']}). ")
        else:
            text += (f"Ran the whole budget of {st['budget_steps']} steps: the forget answers never reached the "
                     f"{st['reference']} reference level — raise the steps or the learning rate. ")
    text += f"Timings: {t}. Go on to **Compare** to see what the model answers now."
    return text


def preset_views(res: dict | None):
    """(status, table rows, figure) of the in- vs out-of-distribution preset."""
    if not res:
        return "*Not run yet.*", [], distribution_figure(None)
    rows = [[fmt(v) if isinstance(v, float) else ("never" if v is None else v) for v in row]
            for row in DD.summary_rows(res)]
    return DD.table_lines(res)[0], rows, distribution_figure(res)


def _pm(iv: dict, scale: float = 100.0) -> str:
    """mean ± half-width of the 95 % interval (the mean alone for one seed), in percent by default."""
    if not iv or iv.get("mean") is None:
        return "—"
    m = f"{scale * iv['mean']:.0f}"
    return m if iv.get("lo") is None else f"{m} ± {scale * (iv['hi'] - iv['mean']):.0f}"


def baseline_rows(out: dict) -> list[list]:
    return [[label, f"{r['lr']:g}", len(r["seeds"]), f"{r['selected']:,}",
             *[_pm(r.get(m)) for m in ("forget_hit", "retain_kept", "neighbours_kept", "kept_ends", "forget_gibberish")],
             _pm(r.get("seconds"), 1.0)] for label, r in out.items()]


class UnlearnPanel:
    def __init__(self, store: S.SessionStore):
        self.store = store

    # ------------------------------------------------------------------ events

    @friendly
    def run(self, objective, selector, sparsity_pct, scope, noise, lr, steps, alpha, retain_loss, seed, stop,
            request: gr.Request, progress=gr.Progress(), split=False, merge="ties", dynamics_every=0):
        """Generator: yields (loss curves, status, then the SPUNGE table and dynamics views) while the run goes on
        in a worker thread."""
        s = session_of(self.store, request)
        cfg = run_config(objective, selector, sparsity_pct, scope, noise, lr, steps, alpha, retain_loss, seed, stop,
                         split, merge, dynamics_every)
        live: list[dict] = []
        state = {"msg": "starting", "frac": 0.0, "result": None, "error": None}

        def report(msg, frac=None):
            state["msg"] = msg
            if frac is not None:
                state["frac"] = frac

        with s.action("unlearning"):
            def work():
                try:
                    state["result"] = S.unlearn(self.store, s, cfg, progress=report, on_step=live.append)
                except BaseException as e:  # noqa: BLE001 - re-raised in the event thread
                    state["error"] = e

            worker = threading.Thread(target=work, name=f"unlearn-{s.id[:8]}", daemon=True)
            worker.start()
            try:
                shown = -1
                while worker.is_alive():
                    worker.join(POLL_S)
                    progress(state["frac"], desc=state["msg"])
                    if len(live) != shown:
                        shown = len(live)
                        yield (plots.loss_curves(list(live), "Unlearning losses (live)"), f"*{state['msg']}*",
                               *([gr.update()] * 5))
            finally:
                if worker.is_alive():  # the visitor went away: stop the run, which rolls the model back
                    s.cancel.set()
                    worker.join()
        if state["error"] is not None:
            raise state["error"]
        res = state["result"]
        notices(s)
        history = res.history if res.history else live
        summary = run_summary(res) + ("\n\n" + dynamics_summary(res.dynamics) if res.dynamics else "")
        yield (plots.loss_curves(history), summary, spunge_rows(res.spunge), *dynamics_figures(res.dynamics),
               gr.update(visible=bool(res.spunge or res.dynamics)))

    @friendly
    def cancel(self, request: gr.Request):
        s = session_of(self.store, request)
        if not s.busy.locked():
            return "*Nothing is running.*"
        s.cancel.set()
        return "**Cancelling…** the model will be rolled back to its state before the run."

    @friendly
    def reset(self, request: gr.Request):
        s = session_of(self.store, request)
        with s.action("reset"):
            had = s.delta is not None
            s.clear_unlearned()
        msg = ("**Reset.** Your unlearned weights were dropped; the model is the original again."
               if had else "*Nothing to reset: the model is the original.*")
        return plots.loss_curves([]), msg

    @friendly
    def compare_baselines(self, objective, sparsity_pct, scope, noise, lr, steps, alpha, retain_loss, seed, stop,
                          n_seeds, request: gr.Request, progress=gr.Progress()):
        s = session_of(self.store, request)
        cfg = run_config(objective, "grin", sparsity_pct, scope, noise, lr, steps, alpha, retain_loss, seed, stop)
        seeds = [int(seed) + i for i in range(max(1, int(n_seeds)))]
        with s.action("baseline comparison"):
            out = S.baselines(self.store, s, cfg, progress=reporter(progress), seeds=seeds)
        notices(s)
        fig = plots.interval_bars({label: {m: r.get(m) for m in BASELINE_BARS} for label, r in out.items()},
                                  BASELINE_BARS, title=f"Same objective and budget, different weight selection "
                                  f"(mean and 95 % interval over {len(seeds)} seed{'s' * (len(seeds) > 1)})")
        return baseline_rows(out), fig

    @friendly
    def run_preset(self, request: gr.Request, progress=gr.Progress()):
        s = session_of(self.store, request)
        with s.action("in- vs out-of-distribution preset"):
            res = S.dynamics_demo(self.store, s, progress=reporter(progress))
        notices(s)
        return preset_views(res)

    # ------------------------------------------------------------------ layout

    def build(self):
        d = RunConfig()
        explain(INTRO)
        with gr.Row():
            self.objective = gr.Dropdown(list(OBJECTIVES), value=d.unlearn.objective, label="Objective")
            self.selector = gr.Dropdown(list(SELECTORS), value=d.mask.selector,
                                        label="Weight selection (grin = GRI mask; the others are baselines)")
            self.sparsity = gr.Slider(0.01, 10, value=100 * d.mask.sparsity, step=0.01,
                                      label="Sparsity: % of scored weights trained")
            self.scope = gr.Radio(list(SCOPES), value=d.mask.scope, label="Mask scope")
        with gr.Row():
            self.noise = gr.Number(value=d.noise.scale, minimum=0, label="Noise scale κ (× weight std; 0 = off)")
            self.lr = gr.Number(value=d.unlearn.lr, minimum=0, label="Learning rate")
            self.steps = gr.Slider(1, 200, value=d.unlearn.steps, step=1, label="Steps (a budget when stopping)")
            self.alpha = gr.Number(value=d.unlearn.alpha, minimum=0, label="Retain weight α")
            self.retain_loss = gr.Radio(list(RETAIN_LOSSES), value=d.unlearn.retain_loss, label="Retain term")
            self.seed = gr.Number(value=d.seed, precision=0, label="Seed")
            self.stop = gr.Checkbox(value=d.unlearn.stop_when_forgotten,
                                    label="Stop when forgotten (at the level of never-known facts)")
        with gr.Row():
            self.split = gr.Checkbox(value=False, label="Split–unlearn–merge: unlearn each forget attribute "
                                                        "separately, merge the deltas (needs an attribute column)")
            self.merge = gr.Radio(list(MERGES), value=d.spunge.merge, label="Merge (SPUNGE)")
            self.dynamics_every = gr.Number(value=0, minimum=0, precision=0,
                                            label="Record dynamics every N steps (0 = off)")
        with gr.Row():
            self.run_btn = gr.Button("Run unlearning", variant="primary")
            self.cancel_btn = gr.Button("Cancel", variant="stop")
            self.reset_btn = gr.Button("Reset to the original model")
            self.baseline_btn = gr.Button("Compare with baselines")
        self.status = gr.Markdown("*Not run yet.*", label="Unlearning status")
        self.curves = gr.Plot(plots.loss_curves([]), label="Loss curves")
        with gr.Accordion("Split–unlearn–merge runs and unlearning dynamics", open=True,
                          visible=False) as self.extra_box:
            self.spunge_table = gr.Dataframe(headers=SPUNGE_HEADERS, label="Subset runs and the merged delta",
                                             interactive=False)
            empty = dynamics_figures(None)
            self.dyn_curves = gr.Plot(empty[0], label="Per-example curves")
            self.dyn_tradeoff = gr.Plot(empty[1], label="Trade-off curve")
            self.dyn_scatter = gr.Plot(empty[2], label="Steps to forget vs memorization")
        with gr.Accordion("In- vs out-of-distribution forgetting (built-in preset)", open=False):
            explain(PRESET_INTRO)
            with gr.Row():
                self.preset_btn = gr.Button("Run the in- vs out-of-distribution preset", variant="primary")
                cancel_button(self.store, "cancel_dynamics_preset")
            empty = preset_views(None)
            self.preset_status = gr.Markdown(empty[0], label="Preset settings")
            self.preset_table = gr.Dataframe(headers=PRESET_HEADERS, label="Dynamics summary per arm",
                                             interactive=False)
            self.preset_plot = gr.Plot(empty[2], label="In- vs out-of-distribution")
        with gr.Accordion("Baseline comparison (same objective and budget)", open=True):
            self.baseline_seeds = gr.Slider(1, 5, value=2, step=1, label="Seeds per selection (each seed is one "
                                            "more run of every selection)")
            self.baseline_table = gr.Dataframe(headers=BASELINE_HEADERS, label="Baselines", interactive=False)
            self.baseline_plot = gr.Plot(plots.empty_figure("Click “Compare with baselines”."),
                                         label="Baseline chart")
        knobs = [self.objective, self.selector, self.sparsity, self.scope, self.noise, self.lr, self.steps, self.alpha,
                 self.retain_loss, self.seed, self.stop]
        self.run_event = self.run_btn.click(
            self.run, knobs + [self.split, self.merge, self.dynamics_every],
            [self.curves, self.status, self.spunge_table, self.dyn_curves, self.dyn_tradeoff, self.dyn_scatter,
             self.extra_box], api_name="unlearn")
        self.cancel_btn.click(self.cancel, None, self.status, api_name="cancel", concurrency_limit=None,
                              queue=False)
        self.reset_btn.click(self.reset, None, [self.curves, self.status], api_name="reset")
        self.preset_btn.click(self.run_preset, None, [self.preset_status, self.preset_table, self.preset_plot],
                              api_name="dynamics_preset")
        base_knobs = [k for k in knobs if k is not self.selector]
        self.baseline_btn.click(self.compare_baselines, base_knobs + [self.baseline_seeds],
                                [self.baseline_table, self.baseline_plot],
                                api_name="baselines")
