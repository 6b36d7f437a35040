"""Step 7 — Quantization probe: does the forgotten knowledge come back when the model is quantized?"""

import gradio as gr

from grin_ui import plots
from grin_ui import session as S
from grin_ui.config import PROBE_KINDS
from grin_ui.ui.common import explain, fmt, friendly, notices, reporter, session_of

INTRO = """**Step 7 — the quantization probe.** Many unlearned models only *look* unlearned: the changes are tiny,
and rounding the weights to 4 bits can erase them — the forgotten answers come back (Zhang et al., ICLR 2025:
21 % of forgotten knowledge retained at full precision, 83 % after 4-bit). The probe quantizes the original and
the unlearned model, re-runs the metrics, and reports **recovery % = 100 · (M(Q(unlearned)) − M(unlearned)) /
(M(original) − M(unlearned))** on the forget set: 0 % = stays forgotten, 100 % = fully back, — = undefined
(unlearning did not change that metric). The **survival map** shows, per block × module, the share of the
unlearning changes that still differ from the original after quantization. *Note:* the bundled model's weights
come from a Q4_1 file, so they already sit on a (different) 4-bit grid."""

KIND_HELP = {"nf4": "NF4 (bitsandbytes 4-bit NormalFloat)", "fp4": "FP4 (bitsandbytes 4-bit float)",
             "int8": "LLM.int8 (bitsandbytes 8-bit)", "rtn4": "RTN int4 (round-to-nearest, groups of 128)",
             "rtn8": "RTN int8 (round-to-nearest, groups of 128)"}
PROBE_HEADERS = ["probe", "model", "forget hit rate", "forget ROUGE-L", "forget answer prob", "retain hit rate",
                 "retain ROUGE-L", "seconds"]
RECOVERY_HEADERS = ["probe", "hit rate recovery %", "ROUGE-L recovery %", "answer prob recovery %",
                    "truth ratio recovery %", "changes surviving"]


def probe_rows(session: S.Session) -> list[list]:
    rows = []
    for which in ("original", "unlearned"):
        ev = session.evals.get(which)
        if ev:
            rows.append(["full precision", which] + _cells(ev) + ["—"])
    for kind, res in session.probes.items():
        for which in ("original", "unlearned"):
            if which in res:
                rows.append([kind, which] + _cells(res[which]) + [fmt(res.get("seconds"), 3)])
    return rows


def _cells(ev: dict) -> list[str]:
    f, r = ev.get("forget") or {}, ev.get("retain") or {}
    return [fmt(f.get("answer_hit_rate")), fmt(f.get("rougeL_recall")), fmt(f.get("answer_prob")),
            fmt(r.get("answer_hit_rate")), fmt(r.get("rougeL_recall"))]


def recovery_rows(probes: dict) -> list[list]:
    rows = []
    for kind, res in probes.items():
        rec, sv = res.get("recovery") or {}, res.get("survival") or {}
        surv = "—" if sv.get("fraction") is None else \
            f"{sv['survived']:,} of {sv['changed']:,} ({100 * sv['fraction']:.1f} %)"
        rows.append([kind] + [fmt(rec.get(m), 3) for m in ("answer_hit_rate", "rougeL_recall", "answer_prob",
                                                          "truth_ratio")] + [surv])
    return rows


class ProbePanel:
    def __init__(self, store: S.SessionStore):
        self.store = store

    def _views(self, s: S.Session, shown: str | None):
        probes = s.probes
        kinds = list(probes)
        shown = shown if shown in probes else (kinds[-1] if kinds else None)
        if shown:
            sv = probes[shown]["survival"]
            surv = plots.survival_heatmap(sv["blocks"], sv["modules"], sv["values"], shown)
        else:
            surv = plots.empty_figure("Run a probe to see which changes survive.")
        states = {}
        for which in ("original", "unlearned"):
            if which in s.evals:
                states[which] = s.evals[which]
        for kind, res in probes.items():
            states[f"{kind} · unlearned"] = res["unlearned"]
        bars = plots.metrics_bars(states, title="Forget / retain metrics at full precision and quantized")
        rec = plots.recovery_bars({k: v.get("recovery") or {} for k, v in probes.items()})
        return (probe_rows(s), recovery_rows(probes), bars, rec, surv,
                gr.update(choices=kinds, value=shown))

    @friendly
    def run(self, kinds: list[str], request: gr.Request, progress=gr.Progress()):
        s = session_of(self.store, request)
        with s.action("quantization probe"):
            out = S.probe(self.store, s, kinds, progress=reporter(progress))
        notices(s)
        return self._views(s, list(out)[-1] if out else None)

    @friendly
    def show_survival(self, kind: str, request: gr.Request):
        s = session_of(self.store, request)
        if kind not in s.probes:
            return plots.empty_figure("Run a probe to see which changes survive.")
        sv = s.probes[kind]["survival"]
        return plots.survival_heatmap(sv["blocks"], sv["modules"], sv["values"], kind)

    def build(self):
        explain(INTRO)
        with gr.Row():
            self.kinds = gr.CheckboxGroup(choices=[(KIND_HELP[k], k) for k in PROBE_KINDS], value=["nf4"],
                                          label="Quantization probes", scale=4)
            self.run_btn = gr.Button("Run the probe", variant="primary", scale=1)
        self.recovery_table = gr.Dataframe(headers=RECOVERY_HEADERS, label="Recovery of forgotten knowledge",
                                           interactive=False)
        self.table = gr.Dataframe(headers=PROBE_HEADERS, label="Metrics per probe", interactive=False)
        with gr.Row():
            self.bars = gr.Plot(plots.empty_figure("Run a probe to see the metrics."), label="Probe metrics chart")
            self.recovery_plot = gr.Plot(plots.recovery_bars({}), label="Recovery chart")
        self.shown = gr.Dropdown(choices=[], label="Survival map of probe")
        self.survival = gr.Plot(plots.empty_figure("Run a probe to see which changes survive."),
                                label="Survival map")
        outs = [self.table, self.recovery_table, self.bars, self.recovery_plot, self.survival, self.shown]
        self.run_btn.click(self.run, self.kinds, outs, api_name="probe")
        self.shown.input(self.show_survival, self.shown, self.survival, api_name="survival_map")
