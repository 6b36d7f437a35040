"""Step 6 — Compare: original vs unlearned answers side by side, metrics table and chart."""

import difflib
import html
import re

import gradio as gr

from grin_ui import plots
from grin_ui import session as S
from grin_ui.ui.common import cancel_button, explain, fmt, friendly, notices, reporter, session_of

INTRO = """**Step 6 — compare.** Both models answer every forget, retain and neighbours question (greedy decoding).
Words the unlearned model no longer says are marked <span class="diff-del">like this</span>, new words
<span class="diff-add">like this</span>. A good result: forget answers change and lose the reference fact, retain
answers — and the neighbours, which unlearning never saw — stay the same. Metrics (higher = more knowledge): **answer hit rate** (the reference answer appears in the
generation), **ROUGE-L recall** against the reference, **answer probability** P(answer | question)^(1/length),
**NLL** of the answer; *truth ratio*, *membership inference* (forget vs holdout; AUC 0.5 = indistinguishable) and
*utility* (general-text perplexity, multiple-choice accuracy) and *fluency* (answers that end before the token
limit, repetition loops, word salad) when available."""

SET_METRICS = ("answer_hit_rate", "rougeL_recall", "answer_prob", "nll", "truth_ratio")
FLUENCY_LABELS = {"ends_rate": "ends before the limit", "loop_rate": "repetition loops",
                  "gibberish_rate": "word salad"}
SETS = ("forget", "retain", "neighbours", "holdout")  # every table lists the sets in this order
SHOWN_SETS = ("forget", "retain", "neighbours")  # generations side by side and the chart
METRIC_HEADERS = ["set", "metric", "original", "unlearned", "change"]
COLOR_MAP = {"removed": "#fecaca", "added": "#bbf7d0"}
_WORD = re.compile(r"\S+|\s+")


def word_diff(before: str, after: str) -> tuple[list, list]:
    """Word-level diff as HighlightedText values: (before tokens with 'removed' marks, after with 'added')."""
    a, b = _WORD.findall(before or ""), _WORD.findall(after or "")
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    left, right = [], []
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        for tok in a[i1:i2]:
            left.append((tok, None if op == "equal" or tok.isspace() else "removed"))
        for tok in b[j1:j2]:
            right.append((tok, None if op == "equal" or tok.isspace() else "added"))
    return left, right


def _html_tokens(tokens: list, cls: str) -> str:
    return "".join(f"<span class='{cls}'>{html.escape(t)}</span>" if label else html.escape(t) for t, label in tokens)


def hit_badge(hit) -> str:
    """A small label saying whether the reference answer appears in the generation."""
    return "<span class='hit yes'>hit</span>" if hit else "<span class='hit no'>miss</span>"


def generations_html(original: dict, unlearned: dict | None, sets=SHOWN_SETS) -> str:
    """A table per set: question, reference, original answer, unlearned answer, with changed words marked."""
    parts = []
    for name in sets:
        ex0 = (original.get(name) or {}).get("examples") or []
        ex1 = ((unlearned or {}).get(name) or {}).get("examples") or []
        if not ex0:
            continue
        rows = []
        for i, e in enumerate(ex0):
            u = ex1[i] if i < len(ex1) else None
            left, right = word_diff(e.get("generation", ""), u.get("generation", "") if u else "")
            hit0 = hit_badge(e.get("hit"))
            hit1 = hit_badge(u.get("hit")) if u else ""
            rows.append(
                f"<tr><td>{html.escape(e.get('question') or '')}</td><td>{html.escape(e.get('reference') or '')}</td>"
                f"<td>{hit0} {_html_tokens(left, 'diff-del')}</td>"
                f"<td>{hit1} {_html_tokens(right, 'diff-add') if u else '<i>not unlearned yet</i>'}</td></tr>")
        parts.append(
            f"<h4>{name.capitalize()} set ({len(ex0)} questions)</h4><table class='gen-table'><thead><tr>"
            "<th>question</th><th>reference</th><th>original model</th><th>unlearned model</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")
    return "<div class='generations'>" + "".join(parts) + "</div>" if parts else "<p><i>No generations yet.</i></p>"


def _row(set_name: str, label: str, v0, v1) -> list:
    change = (v1 - v0) if isinstance(v0, (int, float)) and isinstance(v1, (int, float)) else None
    return [set_name, label, fmt(v0), fmt(v1), "—" if change is None else f"{change:+.3g}"]


def metric_rows(original: dict, unlearned: dict | None) -> list[list]:
    rows = []
    for name in SETS:
        if name not in original:
            continue
        after = (unlearned or {}).get(name) or {}
        for m in SET_METRICS:
            if original[name].get(m) is not None:
                rows.append(_row(name, plots.METRIC_LABELS.get(m, m), original[name][m], after.get(m)))
        f0, f1 = original[name].get("fluency") or {}, after.get("fluency") or {}
        for k, label in FLUENCY_LABELS.items():
            if k in f0 or k in f1:
                rows.append(_row(name, label, f0.get(k), f1.get(k)))
    for group, keys in (("mia", ("loss_auc", "zlib_auc", "mink_auc", "minkpp_auc", "score")),
                        ("utility", ("perplexity", "mc_accuracy")),
                        ("semeval", ("aggregate", "final"))):
        g0, g1 = original.get(group) or {}, (unlearned or {}).get(group) or {}
        label = {"mia": "membership inference", "utility": "utility", "semeval": "SemEval-style"}[group]
        for k in keys:
            if isinstance(g0.get(k), (int, float)) or isinstance(g1.get(k), (int, float)):
                rows.append(_row(label, k, g0.get(k), g1.get(k)))
    return rows


class ComparePanel:
    def __init__(self, store: S.SessionStore):
        self.store = store

    @friendly
    def compare(self, utility: bool, request: gr.Request, progress=gr.Progress()):
        s = session_of(self.store, request)
        s.require("forget", "delta")
        say = reporter(progress)
        with s.action("comparison"):
            ev0 = S.evaluate(self.store, s, "original", utility=bool(utility), progress=say)
            ev1 = S.evaluate(self.store, s, "unlearned", utility=bool(utility), progress=say)
        notices(s)
        fig = plots.metrics_bars({"original": ev0, "unlearned": ev1}, title="Original vs unlearned",
                                 sets=[n for n in SHOWN_SETS if n in ev0])
        return metric_rows(ev0, ev1), fig, generations_html(ev0, ev1)

    @friendly
    def ask_both(self, question: str, request: gr.Request):
        if not (question or "").strip():
            raise gr.Error("Type a prompt first.")
        s = session_of(self.store, request)
        s.require("delta")
        a0 = S.ask(self.store, s, [question.strip()])[0]
        a1 = S.ask(self.store, s, [question.strip()], unlearned=True)[0]
        return word_diff(a0, a1)

    def build(self):
        explain(INTRO)
        with gr.Row():
            self.compare_btn = gr.Button("Evaluate original vs unlearned", variant="primary", scale=3)
            cancel_button(self.store, "cancel_compare")
            self.utility = gr.Checkbox(value=True, label="Include utility (perplexity, multiple choice)", scale=2)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                self.table = gr.Dataframe(headers=METRIC_HEADERS, label="Metrics: original vs unlearned",
                                          interactive=False, max_height=480)
            with gr.Column(scale=1):
                self.chart = gr.Plot(plots.empty_figure("Evaluate to see the chart."), label="Metrics chart")
        self.generations = gr.HTML("<p><i>Run the comparison to see the answers side by side.</i></p>",
                                   label="Answers side by side")
        gr.Markdown("**Ask both models anything**")
        with gr.Row():
            self.prompt = gr.Textbox(label="Free prompt", scale=4, value="What is the capital of France?")
            self.ask_btn = gr.Button("Ask both models", scale=1)
        with gr.Row():
            self.before = gr.HighlightedText(label="Original model", color_map=COLOR_MAP, combine_adjacent=True,
                                             show_legend=False)
            self.after = gr.HighlightedText(label="Unlearned model", color_map=COLOR_MAP, combine_adjacent=True,
                                            show_legend=False)
        self.compare_btn.click(self.compare, self.utility, [self.table, self.chart, self.generations],
                               api_name="compare")
        self.ask_btn.click(self.ask_both, self.prompt, [self.before, self.after], api_name="ask_both")
