"""Step 1 — Model: pick the model, see its summary card, ask it anything."""

import gradio as gr

from grin_ui import session as S
from grin_ui.models import DEFAULT_MODEL, DEFAULT_NAME
from grin_ui.ui.common import explain, friendly, reporter, session_of

INTRO = f"""**Step 1 — the model.** Everything runs on a real language model. `default` is the bundled
**{DEFAULT_NAME}** (135 M parameters, runs on a laptop CPU). You can also type a Hugging Face model id or a local
model directory. The base model is shared by every visitor; your unlearned weights are kept as a small
*delta* of your own, so nobody else sees them."""


class ModelPanel:
    def __init__(self, store: S.SessionStore, default_model: str = DEFAULT_MODEL):
        self.store = store
        self.default_model = default_model

    # ------------------------------------------------------------------ events

    @friendly
    def load(self, spec: str, request: gr.Request, progress=gr.Progress()):
        """Load (or reuse) the model and make it this session's model. Returns the summary rows and a status."""
        s = session_of(self.store, request)
        spec = S.normalize_spec(spec)
        with s.action("model change"):
            base = self.store.models.get(spec, progress=reporter(progress))
            changed = spec != s.model_spec
            s.set_model(spec)
        status = f"Loaded **{base.lm.summary.name}**."
        if changed:
            status += " Scores, mask and unlearned weights of the previous model were cleared."
        plan = base.lm.extra.get("memory_plan")
        if plan is not None:  # grin_ui.memplan: needs per action from the config, vs the memory free at load
            have = base.lm.extra.get("memory_available")
            status += f"\n\nMemory plan — {plan.summary(have, base.lm.summary.device)}."
        return [list(r) for r in base.lm.summary.as_rows()], status

    @friendly
    def ask(self, question: str, request: gr.Request):
        if not (question or "").strip():
            raise gr.Error("Type a question first.")
        s = session_of(self.store, request)
        return S.ask(self.store, s, [question.strip()])[0]

    # ------------------------------------------------------------------ layout

    def build(self):
        explain(INTRO)
        with gr.Row():
            self.spec = gr.Dropdown(
                choices=sorted({DEFAULT_MODEL, self.default_model}), value=self.default_model, allow_custom_value=True,
                label="Model (default, a Hugging Face id, or a local directory)", scale=4)
            self.load_btn = gr.Button("Load model", variant="primary", scale=1)
        self.status = gr.Markdown(label="Model status")
        self.card = gr.Dataframe(headers=["field", "value"], label="Model summary", interactive=False,
                                 column_widths=["30%", "70%"])
        gr.Markdown("**Ask the original model anything** (greedy decoding, up to 64 new tokens).")
        with gr.Row():
            self.question = gr.Textbox(value="What is the capital of France?", label="Question", scale=4)
            self.ask_btn = gr.Button("Ask", scale=1)
        self.answer = gr.Textbox(label="Answer of the original model", interactive=False)
        self.load_btn.click(self.load, self.spec, [self.card, self.status], api_name="load_model")
        self.ask_btn.click(self.ask, self.question, self.answer, api_name="ask")
        self.question.submit(self.ask, self.question, self.answer, api_name="ask_submit")
