"""The dashboard's event functions called in process on the tiny model: the whole journey, errors, cancel."""

import json
import threading
import time
from pathlib import Path

import gradio as gr
import pytest
import torch

from grin_ui import session as S
from grin_ui.config import MaskConfig
from grin_ui.mask import build_mask
from grin_ui.ui.app import App
from grin_ui.ui.compare_panel import generations_html, word_diff
from tests import tiny


def quiet(*args, **kwargs):
    """Stands in for gr.Progress outside a running event."""


def jsonl(records) -> str:
    return "\n".join(json.dumps(r.to_dict()) for r in records)


def req(sid: str) -> gr.Request:
    return gr.Request(session_hash=sid)


@pytest.fixture(scope="module")
def app(tiny_dir):
    a = App(tiny_dir, S.SessionStore(default_model=tiny_dir))
    a.build()
    return a


@pytest.fixture(scope="module")
def journey(app):
    """One session taken through data → scores → unlearn (5 steps)."""
    r = req("journey")
    for name, recs in (("forget", tiny.FORGET), ("retain", tiny.RETAIN), ("holdout", tiny.HOLDOUT)):
        app.data_panel.paste_event(name)(jsonl(recs), r, quiet)
    app.influence_panel.compute(1.0, "global", "mean log10", r, quiet)
    outs = list(app.unlearn_panel.run("npo", "grin", 1.0, "global", 0.1, 1e-3, 5, 1.0, "nll", 0, r, quiet))
    return r, outs


def test_start_fills_model_card(app, tiny_dir):
    rows, status, *data = app.start(None, req("fresh"), quiet)
    fields = dict(rows)
    assert fields["architecture"] == "LlamaForCausalLM" and fields["layers"] == "2"
    assert "Loaded" in status
    assert len(data) == 6 and data[0] == [] and "No forget set" in data[1]


def test_paste_sets_preview_counts_and_warnings(app):
    r = req("data")
    text = "Q: Where was Velmora Quist born?\nA: Tarsk\n\nQ: Where was Velmora Quist born?\nA: Tarsk\n"
    preview, info = app.data_panel.paste_event("forget")(text, r, quiet)
    assert preview == [["Where was Velmora Quist born?", "Tarsk"]]
    assert "**1 forget examples** (question/answer)" in info and "Tokens per example" in info
    assert "1 duplicate example(s) dropped" in info


def test_bad_input_is_a_readable_error_and_keeps_state(app):
    r = req("bad")
    app.data_panel.paste_event("forget")("Q: a?\nA: b", r, quiet)
    with pytest.raises(gr.Error, match="line 2"):
        app.data_panel.paste_event("forget")('{"question": "x", "answer": "y"}\n{oops', r, quiet)
    with pytest.raises(gr.Error, match="empty"):
        app.data_panel.paste_event("retain")("   ", r, quiet)
    s = app.store.get("bad")
    assert s.sets["forget"].records[0].answer == "b" and "retain" not in s.sets
    with pytest.raises(gr.Error, match="step 4"):
        app.influence_panel.heatmap("mean log10", r)
    with pytest.raises(gr.Error, match="retain set"):
        app.influence_panel.compute(1.0, "global", "mean log10", r, quiet)


def test_upload_file(app, tmp_path):
    path = tmp_path / "retain.csv"
    path.write_text("question,answer\nWhat does Tobiah Renn write?,desert noir\n")
    preview, info = app.data_panel.upload_event("retain")(str(path), req("upload"), quiet)
    assert preview == [["What does Tobiah Renn write?", "desert noir"]] and "retain.csv" in info
    bad = tmp_path / "retain.xlsx"
    bad.write_text("x")
    with pytest.raises(gr.Error, match="unknown file type"):
        app.data_panel.upload_event("retain")(str(bad), req("upload"), quiet)


def test_scores_and_instant_mask_updates(app, journey):
    r, _ = journey
    s = app.store.get("journey")
    # the mask views follow the slider without new gradients: same scores object, exact counts
    scores = s.scores
    density, hist, top, summary, pct, scope = app.influence_panel.update(5.0, "global", r)
    expected = build_mask(None, scores, MaskConfig(sparsity=0.05, scope="global"))
    assert s.scores is scores and s.mask.selected == expected.selected
    assert f"**{expected.selected:,} of {expected.total:,} scored weights selected**" in summary
    blocks, modules, values = expected.block_module_density()
    assert [list(z) for z in density.data[0].z] == [[None if v is None else 100 * v for v in row] for row in values]
    line = [sh for sh in hist.layout.shapes if sh.type == "line"][0]
    assert line.x0 == pytest.approx(expected.threshold)
    assert (pct, scope) == (5.0, "global")
    density, hist, top, summary, _, _ = app.influence_panel.update(5.0, "row", r)
    assert "scope *row*" in summary
    assert top[0][0] == scores.tensor_table()[0]["name"]


def test_unlearn_streams_curves_and_keeps_a_delta(app, journey):
    _, outs = journey
    s = app.store.get("journey")
    final_fig, final_status = outs[-1]
    assert "**Done.**" in final_status
    assert s.delta is not None and s.delta.nnz == s.result.mask.selected
    curve = {t.name: t for t in final_fig.data}
    assert list(curve["forget loss"].y) == [h["forget_loss"] for h in s.history]
    assert len(s.history) == 5
    # the shared base model is the original again
    base = app.store.base(s).lm.model
    for name, e in s.delta.entries.items():
        p = dict(base.named_parameters())[name].detach().reshape(-1)
        assert torch.equal(p[e.idx] if e.idx is not None else p, e.old.reshape(-1))


def test_compare_metrics_and_side_by_side(app, journey):
    r, _ = journey
    rows, fig, html_text = app.compare_panel.compare(False, r, quiet)
    sets_metrics = {(row[0], row[1]) for row in rows}
    assert ("forget", "answer hit rate") in sets_metrics and ("retain", "ROUGE-L recall") in sets_metrics
    assert ("membership inference", "loss_auc") in sets_metrics
    s = app.store.get("journey")
    assert [t.name for t in fig.data] == ["original", "unlearned"]
    assert fig.data[0].y[0] == s.evals["original"]["forget"]["answer_hit_rate"]
    assert "Forget set (6 questions)" in html_text and "Retain set (12 questions)" in html_text
    before, after = app.compare_panel.ask_both("Where was Velmora Quist born?", r)
    assert "".join(t for t, _ in before) and all(lbl in (None, "removed") for _, lbl in before)


def test_probe_recovery_and_survival(app, journey):
    r, _ = journey
    table, rec, bars, rec_plot, surv, shown = app.probe_panel.run(["rtn4"], r, quiet)
    s = app.store.get("journey")
    assert s.probes["rtn4"]["recovery"].keys() >= {"answer_hit_rate", "rougeL_recall"}
    assert rec[0][0] == "rtn4" and "of" in rec[0][-1]
    assert [row[:2] for row in table][-2:] == [["rtn4", "original"], ["rtn4", "unlearned"]]
    sv = s.probes["rtn4"]["survival"]
    z = [[None if v is None else 100 * v for v in row] for row in sv["values"]]
    assert [list(row) for row in surv.data[0].z] == z
    assert shown["value"] == "rtn4"


def test_report_files(app, journey):
    r, _ = journey
    files, preview = app.report_panel.export(r, quiet)
    names = sorted(Path(f).name for f in files)
    assert names == ["delta.safetensors", "report.html", "report.json"]
    rep = json.loads(Path([f for f in files if f.endswith(".json")][0]).read_text())
    s = app.store.get("journey")
    assert rep["eval"]["original"]["forget"]["answer_hit_rate"] == s.evals["original"]["forget"]["answer_hit_rate"]
    assert rep["mask"]["selected"] == s.result.mask.selected
    assert "grin-ui audit report" in preview


def test_errors_do_not_change_the_session(app, journey):
    r, _ = journey
    s = app.store.get("journey")
    delta = s.delta
    with pytest.raises(gr.Error, match="learning rate"):
        list(app.unlearn_panel.run("npo", "grin", 1.0, "global", 0.1, 0.0, 5, 1.0, "nll", 0, r, quiet))
    assert s.delta is delta and not s.busy.locked()
    with pytest.raises(gr.Error, match="step 2"):
        app.compare_panel.compare(False, req("nothing-yet"), quiet)
    app.data_panel.paste_event("forget")("Q: a?\nA: b", req("nothing-yet"), quiet)
    with pytest.raises(gr.Error, match="step 5"):
        app.compare_panel.compare(False, req("nothing-yet"), quiet)


def test_cancel_rolls_back(app, journey):
    r = req("cancel")
    for name, recs in (("forget", tiny.FORGET), ("retain", tiny.RETAIN)):
        app.data_panel.paste_event(name)(jsonl(recs), r, quiet)
    s = app.store.get("cancel")
    base = app.store.base(s).lm.model
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    outs = []
    t = threading.Thread(target=lambda: outs.extend(
        app.unlearn_panel.run("npo", "grin", 1.0, "global", 0.1, 1e-3, 100000, 1.0, "nll", 0, r, quiet)))
    t.start()
    deadline = time.time() + 60
    while not s.history and time.time() < deadline and not outs:
        time.sleep(0.2)
        if s.busy.locked() and app.store.base(s).lock.locked():
            break
    time.sleep(1.0)
    assert "Cancelling" in app.unlearn_panel.cancel(r)
    t.join(120)
    assert not t.is_alive()
    assert "Cancelled" in outs[-1][1]
    assert s.delta is None
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())
    assert "Nothing is running" in app.unlearn_panel.cancel(r)


def test_reset_drops_the_delta(app):
    r = req("reset")
    fig, msg = app.unlearn_panel.reset(r)
    assert "Nothing to reset" in msg


def test_word_diff_marks_changes():
    before, after = word_diff("Paris is the capital", "London is the capital")
    assert ("Paris", "removed") in before and ("London", "added") in after
    assert ("capital", None) in before and ("capital", None) in after
    html_text = generations_html({"forget": {"examples": [{"question": "Q<1>", "reference": "r",
                                                             "generation": "a b", "hit": True}]}},
                                 {"forget": {"examples": [{"generation": "a c", "hit": False}]}})
    assert "Q&lt;1&gt;" in html_text and "<span class='diff-add'>c</span>" in html_text
    assert "<span class='diff-del'>b</span>" in html_text


def test_teach_uses_a_private_copy_and_switches_the_model(app, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GRIN_UI_CACHE", str(tmp_path / "cache"))
    r = req("teach")
    for name, recs in (("forget", tiny.FORGET[:2]), ("retain", tiny.RETAIN[:2])):
        app.data_panel.paste_event(name)(jsonl(recs), r, quiet)
    s = app.store.get("teach")
    shared = app.store.base(s).lm.model
    before = {n: p.detach().clone() for n, p in shared.named_parameters()}
    text, checks, spec, card = app.teach_panel.teach(r, quiet)
    assert "aught" in text and spec.startswith(str(tmp_path / "cache"))
    assert s.model_spec == spec and s.teach["from"] == tiny_dir
    assert len(s.sets["forget"]) == 2  # the data stays, results start afresh on the taught model
    assert all(torch.equal(p, before[n]) for n, p in shared.named_parameters())
    assert app.store.get("journey").model_spec == tiny_dir  # other sessions keep their model
    assert dict(card)["model"] == spec
