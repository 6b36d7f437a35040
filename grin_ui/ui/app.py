"""The dashboard layout: builds the gradio Blocks app from the panels. Wiring only; the work is in grin_ui."""

from __future__ import annotations

import gradio as gr

from grin_ui.errors import GrinError
from grin_ui.generation import generate
from grin_ui.models import load_model

_LOADED: dict = {}


def _model(spec: str):
    if spec not in _LOADED:
        _LOADED.clear()
        _LOADED[spec] = load_model(spec)
    return _LOADED[spec]


def load(spec: str):
    try:
        lm = _model(spec)
    except GrinError as e:
        raise gr.Error(str(e)) from None
    return [list(r) for r in lm.summary.as_rows()]


def ask(spec: str, question: str):
    if not question.strip():
        raise gr.Error("Type a question first.")
    try:
        lm = _model(spec)
    except GrinError as e:
        raise gr.Error(str(e)) from None
    return generate(lm.model, lm.tokenizer, [question], max_new_tokens=64)[0]


def build_app(model: str = "default") -> gr.Blocks:
    with gr.Blocks(title="grin-ui") as demo:
        gr.Markdown("# grin-ui\nExplore and audit machine unlearning in language models.")
        with gr.Row():
            spec = gr.Textbox(value=model, label="Model (default, a Hugging Face id, or a local directory)")
            load_btn = gr.Button("Load model", variant="primary")
        card = gr.Dataframe(headers=["field", "value"], label="Model summary", interactive=False)
        question = gr.Textbox(value="What is the capital of France?", label="Ask the model")
        ask_btn = gr.Button("Ask")
        answer = gr.Textbox(label="Answer", interactive=False)
        load_btn.click(load, spec, card, api_name="load_model")
        ask_btn.click(ask, [spec, question], answer, api_name="ask")
        demo.load(load, spec, card, api_name=False)
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, model: str = "default") -> None:
    _model(model)  # load before serving so the first visitor does not wait
    demo = build_app(model)
    print(f"grin-ui dashboard: http://{host if host != '0.0.0.0' else '127.0.0.1'}:{port}", flush=True)
    demo.queue().launch(server_name=host, server_port=port, show_error=False)
