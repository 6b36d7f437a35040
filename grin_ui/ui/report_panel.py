"""Step 8 — Report: the audit report (HTML and JSON with every number) and the unlearned weights."""

import tempfile
from pathlib import Path

import gradio as gr

from grin_ui import session as S
from grin_ui.ui.common import explain, friendly, reporter, session_of

INTRO = """**Step 8 — the report.** Download an audit report of your session — the configuration and seed, the
model and a hash of its weights, the data (sizes and hashes), the mask, every metric of the original and the
unlearned model and of each quantization probe, recovery and survival, the loss history and the timings — as a
self-contained **HTML** page and as **JSON**. The unlearned weights come as a **sparse delta** (safetensors:
the indices, original and new values of every changed weight), which restores exactly onto the original model."""


class ReportPanel:
    def __init__(self, store: S.SessionStore):
        self.store = store

    @friendly
    def export(self, request: gr.Request, progress=gr.Progress()):
        s = session_of(self.store, request)
        s.require("forget", "delta")
        with s.action("report"):
            out = Path(tempfile.mkdtemp(prefix="grin-ui-report-"))
            json_path, html_path = S.write_report(self.store, s, out, progress=reporter(progress))
            delta_path = out / "delta.safetensors"
            s.delta.save(delta_path)
        return [str(html_path), str(json_path), str(delta_path)], html_path.read_text(encoding="utf-8")

    def build(self):
        explain(INTRO)
        self.export_btn = gr.Button("Build the report and the delta", variant="primary")
        self.files = gr.File(label="Downloads: report.html, report.json, delta.safetensors", file_count="multiple",
                             interactive=False)
        with gr.Accordion("Report preview", open=False):
            self.preview = gr.HTML(label="Report preview")
        self.export_btn.click(self.export, None, [self.files, self.preview], api_name="report")
