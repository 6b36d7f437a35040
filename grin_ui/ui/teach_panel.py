"""Step 3 — Teach (optional): check what the model knows about the forget set; teach it data it does not know."""

import gradio as gr

from grin_ui import session as S
from grin_ui.ui.common import cancel_button, explain, fmt, friendly, reporter, session_of

INTRO = """**Step 3 — teach (optional).** Unlearning only makes sense for knowledge the model has. The
*knowledge check* asks the model every forget and retain question and reports how often the reference answer
appears in its greedy answer (the *answer hit rate*). For facts it does not know yet (e.g. fictitious authors),
*teaching* fine-tunes it on forget ∪ retain ∪ neighbours until it reproduces the answers — like TOFU's fine-tuned
target model (the neighbours are taught so that they are known; unlearning still never trains on them).
Built-in *real-knowledge* facts are known already: skip teaching. Teaching trains a private copy and caches it on
disk; the taught model then becomes your model for the next steps."""


def knowledge_rows(ev: dict, limit: int = 40) -> list[list]:
    rows = []
    for name in ("forget", "retain", "neighbours"):
        for e in (ev.get(name) or {}).get("examples", [])[:limit]:
            rows.append([name, e.get("question"), e.get("reference"), e.get("generation"), "hit" if e.get("hit") else "miss"])
    return rows


def knowledge_summary(ev: dict, title: str) -> str:
    parts = []
    for name in ("forget", "retain", "neighbours", "holdout"):
        if name in ev:
            parts.append(f"{name}: **{fmt(100 * ev[name]['answer_hit_rate'])} %** answered "
                         f"({ev[name]['n']} questions)")
    return f"**{title}** — " + " · ".join(parts) if parts else "*No data yet.*"


class TeachPanel:
    def __init__(self, store: S.SessionStore):
        self.store = store

    @friendly
    def check(self, request: gr.Request, progress=gr.Progress()):
        s = session_of(self.store, request)
        with s.action("knowledge check"):
            ev = S.evaluate(self.store, s, "original", utility=False, progress=reporter(progress))
        return knowledge_summary(ev, "Original model"), knowledge_rows(ev)

    @friendly
    def teach(self, request: gr.Request, progress=gr.Progress()):
        """Teach forget ∪ retain on a private copy; the taught model becomes this session's model."""
        s = session_of(self.store, request)
        with s.action("teaching"):
            path, res = S.teach(self.store, s, progress=reporter(progress))
        b, a = res.before, res.after

        def pct(v):
            return "—" if v is None else f"{100 * v:.0f} %"

        text = (f"**{'Loaded the taught model from the cache' if res.cached else 'Taught'}** in {res.epochs} epochs "
                f"({res.seconds:.0f} s): forget answers {pct(b['forget'])} → **{pct(a['forget'])}**, retain answers "
                f"{pct(b.get('retain'))} → **{pct(a.get('retain'))}**"
                + ("" if res.reached else " (target not reached; more epochs may help)")
                + f". The taught model is now your model (`{path}`); scores and unlearning start from it.")
        rows = [[c["epoch"], pct(c["forget"]), pct(c.get("retain"))] for c in res.checks]
        card = [list(r) for r in self.store.base(s).lm.summary.as_rows()]
        return text, rows, str(path), card

    def build(self):
        explain(INTRO)
        with gr.Row():
            self.check_btn = gr.Button("Check what the model knows", variant="primary")
            self.teach_btn = gr.Button("Teach the forget, retain and neighbours sets")
            cancel_button(self.store, "cancel_teach")
        self.teach_note = gr.Markdown("*Not taught.*", label="Teaching status")
        self.checks = gr.Dataframe(headers=["epoch", "forget answered", "retain answered"],
                                   label="Knowledge checks while teaching", interactive=False)
        self.summary = gr.Markdown(label="Knowledge check summary")
        self.table = gr.Dataframe(headers=["set", "question", "reference", "model answer", "hit"],
                                  label="Knowledge check", interactive=False, wrap=True, max_height=400,
                                  column_widths=["8%", "30%", "26%", "30%", "6%"])
        self.check_btn.click(self.check, None, [self.summary, self.table], api_name="knowledge_check")

    def wire(self, model_spec, model_card):
        """Teaching switches the session's model: keep the Model tab's spec and card in step."""
        self.teach_btn.click(self.teach, None, [self.teach_note, self.checks, model_spec, model_card],
                             api_name="teach")
