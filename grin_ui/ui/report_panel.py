"""Step 8 — Report: the audit report (HTML and JSON with every number), the unlearned weights, and the command
that re-runs the session from the report."""

import json

import gradio as gr

from grin_ui import session as S
from grin_ui.scratch import scratch_dir
from grin_ui.ui.common import explain, friendly, reporter, session_of

INTRO = """**Step 8 — the report.** Download an audit report of your session — the configuration and seed, the
model and a hash of its weights, the data (sizes and hashes), the mask, every metric of the original and the
unlearned model and of each quantization probe, recovery and survival, the loss history and the timings — as a
self-contained **HTML** page and as **JSON** (it follows the versioned schema `grin_ui/report.schema.json`; the CLI
writes the same). The unlearned weights come as a **sparse delta** (safetensors: the indices, original and new values
of every changed weight), which restores exactly onto the original model. Your data sets come along as JSON lines, so
that the command below re-runs the whole session from the downloaded folder, with the same seed and settings."""


def rerun_markdown(command: str) -> str:
    return ("**Re-run this session** from a folder holding the downloaded files (`grin-ui report --from "
            "report.json` re-renders the HTML):\n\n```bash\n" + command + "\n```")


class ReportPanel:
    def __init__(self, store: S.SessionStore):
        self.store = store

    @friendly
    def export(self, request: gr.Request, progress=gr.Progress()):
        s = session_of(self.store, request)
        s.require("forget", "delta")
        with s.action("report"):
            out = str(scratch_dir(s.id, "report"))  # bounded; the previous export is removed
            paths = S.write_report(self.store, s, out, progress=reporter(progress))
        rep_html = paths["report.html"].read_text(encoding="utf-8")
        command = json.loads(paths["report.json"].read_text(encoding="utf-8"))["rerun"]
        return [str(p) for p in paths.values()], rep_html, rerun_markdown(command)

    def build(self):
        explain(INTRO)
        self.export_btn = gr.Button("Build the report and the delta", variant="primary")
        self.files = gr.File(label="Downloads: report.html, report.json, delta.safetensors and the data sets",
                             file_count="multiple", interactive=False)
        self.command = gr.Markdown("*Build the report to see the command that re-runs this session.*",
                                   label="Re-run command")
        with gr.Accordion("Report preview", open=False):
            self.preview = gr.HTML(label="Report preview")
        self.export_btn.click(self.export, None, [self.files, self.preview, self.command], api_name="report")
