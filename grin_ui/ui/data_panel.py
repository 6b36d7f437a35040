"""Step 2 — Data: the forget and retain sets, and the optional neighbours and holdout sets."""

import gradio as gr

from grin_ui import session as S
from grin_ui.config import DataLimits
from grin_ui.data import load_file, parse_text
from grin_ui.errors import GrinError
from grin_ui.examples import list_examples, load_example
from grin_ui.ui.common import explain, friendly, reporter, session_of

PREFERRED_EXAMPLES = ("real-knowledge", "fictitious-authors")

INTRO = """**Step 2 — the data.** The **forget set** is what must go (e.g. facts about one person); the **retain
set** is what must stay (similar facts the model should keep answering; unlearning trains on it); the optional
**neighbours set** is more of what must stay, of the same kind as the forget set, but **never trained on** — it shows
whether the model kept its knowledge or only what it was drilled on; the optional **holdout set** is the same kind of
data that the model never knew — membership-inference metrics compare the forget set against it.
Paste text (one example per line, `Q: …` / `A: …` blocks, or JSON lines), upload a file (.txt .jsonl .json .csv
.tsv .parquet), or start from a built-in example."""

PASTE_HINT = "Q: Where was Ada Lovelace born?\nA: London\n\nQ: ...\nA: ..."
DESCRIPTIONS = {
    "forget": "what the model must forget",
    "retain": "what the model must keep knowing",
    "neighbours": "optional: facts of the forget kind that must stay, evaluated only (never trained on)",
    "holdout": "optional: same kind of data, never known or trained on (for membership inference)",
}
OPTIONAL = ("neighbours", "holdout")


def default_example() -> str | None:
    names = list_examples()
    for n in PREFERRED_EXAMPLES:
        if n in names:
            return n
    return names[0] if names else None


def describe(name: str, example_set, counts: list[int] | None) -> str:
    """One-paragraph summary of a set: size, kind, token counts, attributes and every warning."""
    from grin_ui.spunge import attribute_counts

    if example_set is None:
        return f"*No {name} set.*" + (" (Optional.)" if name in OPTIONAL else "")
    recs = example_set.records
    kind = "question/answer" if all(r.is_qa for r in recs) else (
        "raw text" if not any(r.is_qa for r in recs) else "mixed")
    text = f"**{len(recs)} {name} examples** ({kind}) from *{example_set.source}*."
    if counts:
        text += (f" Tokens per example: min {min(counts)}, mean {sum(counts) / len(counts):.0f}, max {max(counts)}"
                 f" (total {sum(counts):,}).")
    attrs = attribute_counts(recs)
    if any(k != "(none)" for k in attrs):  # the split the Unlearn tab's split–unlearn–merge option would make
        text += " Attributes: " + ", ".join(f"{k} ({v})" for k, v in attrs.items()) + "."
        if name == "forget" and len(attrs) > 1 and "(none)" not in attrs:
            text += " The Unlearn tab can unlearn each attribute separately and merge (split–unlearn–merge)."
    for w in example_set.warnings:
        text += f"\n\n⚠️ {w}"
    return text


class DataPanel:
    def __init__(self, store: S.SessionStore, limits: DataLimits | None = None):
        self.store = store
        self.limits = limits or DataLimits()
        self.previews: dict = {}
        self.infos: dict = {}

    def _outputs(self, s: S.Session, names=S.SET_NAMES) -> list:
        out = []
        for n in names:
            es = s.sets.get(n)
            out += [es.preview(50) if es is not None else [], describe(n, es, s.token_counts.get(n))]
        return out

    # ------------------------------------------------------------------ events

    @friendly
    def use_example(self, name: str, request: gr.Request, progress=gr.Progress()):
        """Load every set of a built-in example into the session (replacing the current sets)."""
        if not name:
            raise GrinError("Pick a built-in example first.")
        s = session_of(self.store, request)
        sets = load_example(name, self.limits)  # parse everything before touching the session
        with s.action("data change"):
            for n in S.SET_NAMES:
                if n in sets:
                    S.load_data(self.store, s, n, sets[n], progress=reporter(progress))
                else:
                    s.clear_data(n)
        for n, es in sets.items():
            for w in es.warnings:
                gr.Warning(w)
        return self._outputs(s)

    def _set(self, which: str, example_set, request, progress):
        s = session_of(self.store, request)
        with s.action("data change"):
            S.load_data(self.store, s, which, example_set, progress=reporter(progress))
        for w in example_set.warnings:
            gr.Warning(w)
        return self._outputs(s, (which,))

    def paste_event(self, which: str):
        @friendly
        def paste(text: str, request: gr.Request, progress=gr.Progress()):
            example_set = parse_text(text, self.limits, source=f"the pasted {which} text")
            return self._set(which, example_set, request, progress)
        paste.__name__ = f"paste_{which}"
        return paste

    def upload_event(self, which: str):
        @friendly
        def upload(path: str | None, request: gr.Request, progress=gr.Progress()):
            if not path:
                s = session_of(self.store, request)
                return self._outputs(s, (which,))
            example_set = load_file(path, self.limits, name=path.rsplit("/", 1)[-1])
            return self._set(which, example_set, request, progress)
        upload.__name__ = f"upload_{which}"
        return upload

    def clear_event(self, which: str):
        @friendly
        def clear(request: gr.Request):
            s = session_of(self.store, request)
            with s.action("data change"):
                s.clear_data(which)
            return self._outputs(s, (which,))
        clear.__name__ = f"clear_{which}"
        return clear

    @friendly
    def show(self, request: gr.Request):
        """The session's current sets (used when the page loads)."""
        return self._outputs(session_of(self.store, request))

    # ------------------------------------------------------------------ layout

    def build(self):
        explain(INTRO)
        examples = list_examples()
        with gr.Row():
            self.example = gr.Dropdown(choices=examples, value=default_example(), label="Built-in example",
                                       scale=4)
            self.example_btn = gr.Button("Use this example", variant="primary", scale=1)
        for n in S.SET_NAMES:
            with gr.Tab(f"{n.capitalize()} set"):
                gr.Markdown(f"The **{n} set**: {DESCRIPTIONS[n]}.")
                self.infos[n] = gr.Markdown(describe(n, None, None), label=f"{n} set summary")
                self.previews[n] = gr.Dataframe(headers=["question / text", "answer"], label=f"{n} set preview",
                                                interactive=False, wrap=True, max_height=320)
                with gr.Accordion(f"Replace the {n} set", open=False):
                    text = gr.Textbox(lines=6, placeholder=PASTE_HINT, label=f"Paste {n} examples")
                    with gr.Row():
                        paste_btn = gr.Button(f"Use pasted text as the {n} set")
                        if n in OPTIONAL:
                            clear_btn = gr.Button(f"Remove the {n} set")
                    upload = gr.File(label=f"Upload a {n} file", file_types=[".txt", ".jsonl", ".json", ".csv",
                                                                              ".tsv", ".parquet"], type="filepath")
                outs = [self.previews[n], self.infos[n]]
                paste_btn.click(self.paste_event(n), text, outs, api_name=f"paste_{n}", show_progress_on=paste_btn)
                upload.upload(self.upload_event(n), upload, outs, api_name=f"upload_{n}", show_progress_on=upload)
                if n in OPTIONAL:
                    clear_btn.click(self.clear_event(n), None, outs, api_name=f"clear_{n}")
        self.all_outputs = [c for n in S.SET_NAMES for c in (self.previews[n], self.infos[n])]
        self.example_btn.click(self.use_example, self.example, self.all_outputs, api_name="use_example")
