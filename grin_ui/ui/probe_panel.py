"""Step 7 — Quantization probe: does the forgotten knowledge come back when the model is quantized? And the
relearning probe: does it come back after a few fine-tuning steps on part of the forget set?"""

import gradio as gr

from grin_ui import plots
from grin_ui import recovery_demo as RD
from grin_ui import session as S
from grin_ui.config import PROBE_KINDS, RelearnConfig
from grin_ui.ui.common import cancel_button, explain, fmt, friendly, notices, reporter, session_of

INTRO = """**Step 7 — the quantization probe.** Many unlearned models only *look* unlearned: the changes are tiny,
and rounding the weights to 4 bits can erase them — the forgotten answers come back (Zhang et al., ICLR 2025:
21 % of forgotten knowledge retained at full precision, 83 % after 4-bit). The probe quantizes the original and
the unlearned model, re-runs the metrics, and reports **recovery % = 100 · (M(Q(unlearned)) − M(unlearned)) /
(M(original) − M(unlearned))** on the forget set: 0 % = stays forgotten, 100 % = fully back, — = undefined
(unlearning did not change that metric). **FP4** is what the paper's code uses (bitsandbytes' default 4-bit type,
blocks of 64, no double quantization); **NF4** is offered beside it. *Note:* the bundled model's weights come from a
Q4_1 file, so they already sit on a (different) 4-bit grid.

The **survival map** shows, per block × module, the share of the changed weights whose quantization *code* moves
when the original and the unlearned weights are both quantized at the original block scale (absmax). Weights whose
dequantized value moves only because a change elsewhere moved their block's absmax are counted apart ("scale
only"), never as surviving. The **histogram** shows each change |Δw| relative to the width of the quantization bin
it sits in: changes well under half a bin (left of the dashed line) are rounded away; large, sparse changes (right
of it) survive."""

KIND_HELP = {"nf4": "NF4 (bitsandbytes 4-bit NormalFloat)",
             "fp4": "FP4 (bitsandbytes 4-bit float — the paper's default)",
             "int8": "LLM.int8 (bitsandbytes 8-bit)", "rtn4": "RTN int4 (round-to-nearest, groups of 128)",
             "rtn8": "RTN int8 (round-to-nearest, groups of 128)"}
PROBE_HEADERS = ["probe", "model", "forget hit rate", "forget ROUGE-L", "forget answer prob", "retain hit rate",
                 "retain ROUGE-L", "seconds"]
NEIGHBOUR_HEADERS = ["neighbours hit rate", "neighbours ROUGE-L"]  # shown when the session has a neighbours set
RECOVERY_HEADERS = ["probe", "hit rate recovery %", "ROUGE-L recovery %", "answer prob recovery %",
                    "truth ratio recovery %", "moved by block scale only", "share of update surviving",
                    "changes ≥ ½ bin", "changes surviving (code moves)"]


def probe_headers(session: S.Session) -> list[str]:
    """PROBE_HEADERS, with the neighbours columns before "seconds" when the session has a neighbours set."""
    extra = NEIGHBOUR_HEADERS if "neighbours" in session.sets else []
    return PROBE_HEADERS[:-1] + extra + PROBE_HEADERS[-1:]


def probe_rows(session: S.Session) -> list[list]:
    rows = []
    nb = "neighbours" in session.sets
    for which in ("original", "unlearned"):
        ev = session.evals.get(which)
        if ev:
            rows.append(["full precision", which] + _cells(ev, nb) + ["—"])
    for kind, res in session.probes.items():
        for which in ("original", "unlearned"):
            if which in res:
                rows.append([kind, which] + _cells(res[which], nb) + [fmt(res.get("seconds"), 3)])
    return rows


def probe_table(session: S.Session) -> dict:
    """The metrics table with its headers (which depend on the session's sets)."""
    return {"headers": probe_headers(session), "data": probe_rows(session)}


def _cells(ev: dict, neighbours: bool = False) -> list[str]:
    f, r = ev.get("forget") or {}, ev.get("retain") or {}
    cells = [fmt(f.get("answer_hit_rate")), fmt(f.get("rougeL_recall")), fmt(f.get("answer_prob")),
             fmt(r.get("answer_hit_rate")), fmt(r.get("rougeL_recall"))]
    if neighbours:
        n = ev.get("neighbours") or {}
        cells += [fmt(n.get("answer_hit_rate")), fmt(n.get("rougeL_recall"))]
    return cells


def _count(n, of) -> str:
    return "—" if n is None or not of else f"{n:,} ({100 * n / of:.1f} %)"


def recovery_rows(probes: dict) -> list[list]:
    rows = []
    for kind, res in probes.items():
        rec, sv = res.get("recovery") or {}, res.get("survival") or {}
        hist = sv.get("ratio_hist") or {}
        surv = "—" if sv.get("fraction") is None else \
            f"{sv['survived']:,} of {sv['changed']:,} ({100 * sv['fraction']:.1f} %)"
        rows.append([kind] + [fmt(rec.get(m), 3) for m in ("answer_hit_rate", "rougeL_recall", "answer_prob",
                                                          "truth_ratio")]
                    + [_count(sv.get("scale_only"), sv.get("changed")), fmt(sv.get("share"), 3),
                       _count(hist.get("at_least_half"), hist.get("n")), surv])
    return rows


def survival_figure(sv: dict | None, kind: str):
    if not sv:
        return plots.empty_figure("Run a probe to see which changes survive.")
    return plots.survival_heatmap(sv["blocks"], sv["modules"], sv["values"], kind,
                                  scale_only=sv.get("scale_only_values"), share=sv.get("share_values"),
                                  cosine=sv.get("cosine_values"))


def ratio_figure(sv: dict | None, kind: str):
    hist = (sv or {}).get("ratio_hist")
    if not hist or not hist.get("n"):
        return plots.empty_figure("Run a probe to see how large the changes are relative to the quantization "
                                  "bins (quantized weights only).")
    title = f"|Δw| / bin width of the changed weights — {kind}"
    med = [(k, hist.get(k)) for k in ("median_abs_delta", "median_bin_width")]
    if all(v is not None for _, v in med):
        title += f" (median |Δw| {med[0][1]:.2g}, median bin {med[1][1]:.2g})"
    return plots.bin_ratio_histogram(hist, title=title)


_RL = RelearnConfig()
RELEARN_INTRO = f"""**Relearning probe.** Quantization is one way forgotten knowledge comes back; a little fine-tuning
is another. The probe splits the forget set in two, fine-tunes the unlearned model ({_RL.steps} steps, lr {_RL.lr:g},
every weight) on one part ({_RL.train_fraction:.0%}), and measures the *other* part, which it never trains on:
**recovery % = 100 · (M(relearned) − M(unlearned)) / (M(original) − M(unlearned))**. Knowledge that was only hidden
comes back on facts the model did not see again. The same steps on the holdout set — facts the model never knew —
give the **reference**, in the same units: how much of that gain plain learning of new facts would explain. The
shared model is restored bit for bit afterwards."""
RELEARN_HEADERS = ["metric", "original", "unlearned", "after relearning", "recovery %", "reference before",
                   "reference after", "reference gain %"]
RELEARN_METRICS = ("answer_hit_rate", "rougeL_recall", "answer_prob", "truth_ratio", "nll")


def relearn_rows(rl: dict | None) -> list[list]:
    """One row per metric: the evaluated part of the forget set (original, unlearned, relearned), recovery %, and
    the reference (holdout part before and after the same steps) with its gain."""
    if not rl:
        return []
    f, ref = rl.get("forget") or {}, rl.get("reference") or {}
    orig, before, after = f.get("original") or {}, f.get("before") or {}, f.get("after") or {}
    rb, ra = ref.get("before") or {}, ref.get("after") or {}
    rec, gain = rl.get("recovery") or {}, rl.get("reference_gain") or {}
    return [[plots.METRIC_LABELS.get(m, m), fmt(orig.get(m)), fmt(before.get(m)), fmt(after.get(m)),
             fmt(rec.get(m), 3), fmt(rb.get(m)), fmt(ra.get(m)), fmt(gain.get(m), 3)]
            for m in RELEARN_METRICS if m in before]


def relearn_summary(rl: dict | None) -> str:
    if not rl:
        return "*Run the relearning probe after unlearning (step 5).*"
    cfg, split = rl.get("config") or {}, (rl.get("split") or {}).get("forget") or {}
    pct = lambda v: "—" if v is None else f"{v:.0f} %"  # noqa: E731
    rec, gain = rl.get("recovery") or {}, rl.get("reference_gain") or {}
    text = (f"Fine-tuned {cfg.get('steps')} steps (lr {cfg.get('lr', 0):g}) on {len(split.get('train') or [])} "
            f"forget examples; measured on the other {len(split.get('eval') or [])}: answer hit rate recovery "
            f"**{pct(rec.get('answer_hit_rate'))}**, answer probability **{pct(rec.get('answer_prob'))}**")
    if rl.get("reference") is None:
        text += ". No holdout set, so no reference (add one in step 2)."
    else:
        text += (f"; the reference (never-known facts) gained {pct(gain.get('answer_hit_rate'))} and "
                 f"{pct(gain.get('answer_prob'))} in the same units")
    return text + f" ({fmt(rl.get('seconds'), 3)} s)."


def relearn_figure(rl: dict | None):
    if not rl or not rl.get("recovery"):
        return plots.empty_figure("Run the relearning probe to see how much comes back.")
    bars = {"forget (part not relearned on)": rl["recovery"]}
    if rl.get("reference_gain"):
        bars["reference (never-known facts)"] = rl["reference_gain"]
    return plots.recovery_bars(bars, title="Knowledge back after relearning (% of what unlearning removed)")


DEMO_INTRO = f"""**Does quantization undo it? Full fine-tuning vs GRIN.** One click runs two unlearning runs from the
original model on this session's forget / retain / holdout sets, with the same seed, and probes each under NF4, FP4
and RTN int4: **full fine-tuning** — every weight trainable, {RD.GENTLE_OBJECTIVE}, lr {RD.GENTLE_LR:g}, a fixed
{RD.GENTLE_STEPS} steps, no noise (small changes spread over all weights, the setting of Zhang et al.) — and **GRIN**
with its defaults (large changes on 1 % of the weights). For each: how many changed weights move their quantization
code, the median change relative to the bin width, and the recovery % of the forget metrics against the
full-precision original. Your own unlearning (step 5) is not touched. It takes several minutes on a CPU.
Measured on the bundled model (README, "Does quantization undo it?"): the full fine-tune's forgetting survives 4-bit
quantization although under 1 % of its changed weights move their code (rounding keeps a dense update on average),
while GRIN's default run, whose refusal only just outranks the answers, gets 0–38 % of its forget answers back: what
decides recovery is how far past the threshold a run goes, not how many weights it changes."""


def demo_summary(res: dict | None) -> str:
    if not res:
        return "*Click the button to run the comparison (needs a forget and a retain set).*"
    return "\n".join(RD.table_lines(res)[: len(res["arms"])])


def demo_views(res: dict | None):
    return demo_summary(res), RD.table_rows(res) if res else []


class ProbePanel:
    def __init__(self, store: S.SessionStore):
        self.store = store

    def _views(self, s: S.Session, shown: str | None):
        probes = s.probes
        kinds = list(probes)
        shown = shown if shown in probes else (kinds[-1] if kinds else None)
        surv = survival_figure(probes[shown].get("survival") if shown else None, shown or "")
        states = {}
        for which in ("original", "unlearned"):
            if which in s.evals:
                states[which] = s.evals[which]
        for kind, res in probes.items():
            states[f"{kind} · unlearned"] = res["unlearned"]
        bars = plots.metrics_bars(states, title="Forget / retain metrics at full precision and quantized")
        rec = plots.recovery_bars({k: v.get("recovery") or {} for k, v in probes.items()})
        return (probe_table(s), recovery_rows(probes), bars, rec, surv,
                gr.update(choices=kinds, value=shown))

    @staticmethod
    def _relearn_views(s: S.Session):
        return relearn_summary(s.relearn), relearn_rows(s.relearn), relearn_figure(s.relearn)

    @friendly
    def run(self, kinds: list[str], request: gr.Request, progress=gr.Progress()):
        s = session_of(self.store, request)
        with s.action("quantization probe"):
            out = S.probe(self.store, s, kinds, progress=reporter(progress))
        notices(s)
        return self._views(s, list(out)[-1] if out else None)

    @friendly
    def relearn(self, request: gr.Request, progress=gr.Progress()):
        s = session_of(self.store, request)
        with s.action("relearning probe"):
            S.relearn(self.store, s, progress=reporter(progress))
        notices(s)
        return self._relearn_views(s)

    @friendly
    def run_demo(self, request: gr.Request, progress=gr.Progress()):
        s = session_of(self.store, request)
        with s.action("quantization comparison"):
            S.recovery_demo(self.store, s, progress=reporter(progress))
        notices(s)
        return demo_views(s.recovery_demo)

    @friendly
    def cancel_relearn(self, request: gr.Request):
        s = session_of(self.store, request)
        if not s.busy.locked():
            return "*Nothing is running.*"
        s.cancel.set()
        return "**Cancelling…** the shared model will be restored."

    @friendly
    def show_survival(self, kind: str, request: gr.Request):
        s = session_of(self.store, request)
        return survival_figure((s.probes.get(kind) or {}).get("survival"), kind)

    @friendly
    def show_ratio(self, kind: str, request: gr.Request):
        s = session_of(self.store, request)
        return ratio_figure((s.probes.get(kind) or {}).get("survival"), kind)

    def build(self):
        explain(INTRO)
        with gr.Row():
            self.kinds = gr.CheckboxGroup(choices=[(KIND_HELP[k], k) for k in PROBE_KINDS], value=["nf4"],
                                          label="Quantization probes", scale=4)
            self.run_btn = gr.Button("Run the probe", variant="primary", scale=1)
            cancel_button(self.store, "cancel_probe")
        self.recovery_table = gr.Dataframe(headers=RECOVERY_HEADERS, label="Recovery of forgotten knowledge",
                                           interactive=False)
        self.table = gr.Dataframe(headers=PROBE_HEADERS, label="Metrics per probe", interactive=False)
        with gr.Row():
            self.bars = gr.Plot(plots.empty_figure("Run a probe to see the metrics."), label="Probe metrics chart")
            self.recovery_plot = gr.Plot(plots.recovery_bars({}), label="Recovery chart")
        self.shown = gr.Dropdown(choices=[], label="Survival map of probe")
        with gr.Row():
            self.survival = gr.Plot(plots.empty_figure("Run a probe to see which changes survive."),
                                    label="Survival map")
            self.ratio_plot = gr.Plot(ratio_figure(None, ""), label="Change size relative to the bin width")
        outs = [self.table, self.recovery_table, self.bars, self.recovery_plot, self.survival, self.shown]
        self.run_btn.click(self.run, self.kinds, outs, api_name="probe").then(
            self.show_ratio, self.shown, self.ratio_plot, api_name="bin_ratio_histogram_after_probe")
        self.shown.input(self.show_survival, self.shown, self.survival, api_name="survival_map")
        self.shown.input(self.show_ratio, self.shown, self.ratio_plot, api_name="bin_ratio_histogram")
        with gr.Accordion("Does quantization undo it? Full fine-tuning vs GRIN", open=False):
            explain(DEMO_INTRO)
            with gr.Row():
                self.demo_btn = gr.Button("Does quantization undo it? Full fine-tuning vs GRIN", variant="primary")
                cancel_button(self.store, "cancel_recovery_demo")
            self.demo_status = gr.Markdown(demo_summary(None), label="Comparison settings")
            self.demo_table = gr.Dataframe(headers=RD.HEADERS, label="Full fine-tuning vs GRIN under quantization",
                                           interactive=False)
        self.demo_btn.click(self.run_demo, None, [self.demo_status, self.demo_table], api_name="recovery_demo")
        with gr.Accordion("Relearning probe", open=True):
            explain(RELEARN_INTRO)
            with gr.Row():
                self.relearn_btn = gr.Button("Run the relearning probe", variant="primary", scale=3)
                self.relearn_cancel = gr.Button("Cancel", variant="stop", scale=1)
            self.relearn_status = gr.Markdown(relearn_summary(None), label="Relearning summary")
            with gr.Row():
                self.relearn_table = gr.Dataframe(headers=RELEARN_HEADERS, label="Relearning probe: forget part "
                                                  "vs reference", interactive=False, scale=3)
                self.relearn_plot = gr.Plot(relearn_figure(None), label="Relearning recovery chart", scale=2)
        self.relearn_btn.click(self.relearn, None, [self.relearn_status, self.relearn_table, self.relearn_plot],
                               api_name="relearn")
        self.relearn_cancel.click(self.cancel_relearn, None, self.relearn_status, api_name="cancel_relearn",
                                  concurrency_limit=None, queue=False)
