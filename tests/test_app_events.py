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
from grin_ui.report import validate_report, weights_sha256
from grin_ui.ui.app import App
from grin_ui.ui.common import fmt
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
    for name, recs in (("forget", tiny.FORGET), ("retain", tiny.RETAIN[:8]), ("holdout", tiny.HOLDOUT),
                       ("neighbours", tiny.RETAIN[8:])):
        app.data_panel.paste_event(name)(jsonl(recs), r, quiet)
    app.influence_panel.compute(1.0, "global", "mean log10", r, quiet)
    outs = list(app.unlearn_panel.run("npo", "grin", 1.0, "global", 0.1, 1e-3, 5, 1.0, "nll", 0, True, r, quiet))
    return r, outs


def test_start_fills_model_card(app, tiny_dir):
    rows, status, *data = app.start(None, req("fresh"), quiet)
    fields = dict(rows)
    assert fields["architecture"] == "LlamaForCausalLM" and fields["layers"] == "2"
    assert "Loaded" in status
    assert len(data) == 8 and data[0] == [] and "No forget set" in data[1]
    assert "No neighbours set.* (Optional.)" in data[7]


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
    final_fig, final_status, *_ = outs[-1]
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
    assert ("neighbours", "answer hit rate") in sets_metrics
    assert [row[0] for row in rows if row[1] == "NLL"] == ["forget", "retain", "neighbours", "holdout"]
    assert ("membership inference", "loss_auc") in sets_metrics
    s = app.store.get("journey")
    assert [t.name for t in fig.data] == ["original", "unlearned"]
    assert fig.data[0].y[0] == s.evals["original"]["forget"]["answer_hit_rate"]
    assert "Forget set (6 questions)" in html_text and "Retain set (8 questions)" in html_text
    assert "Neighbours set (4 questions)" in html_text
    nb = next(row for row in rows if row[:2] == ["neighbours", "answer hit rate"])
    assert nb[2] == "1" and float(nb[3]) == s.evals["unlearned"]["neighbours"]["answer_hit_rate"]
    before, after = app.compare_panel.ask_both("Where was Velmora Quist born?", r)
    assert "".join(t for t, _ in before) and all(lbl in (None, "removed") for _, lbl in before)


def test_probe_recovery_and_survival(app, journey):
    r, _ = journey
    table, rec, bars, rec_plot, surv, shown = app.probe_panel.run(["rtn4"], r, quiet)
    s = app.store.get("journey")
    assert s.probes["rtn4"]["recovery"].keys() >= {"answer_hit_rate", "rougeL_recall"}
    assert rec[0][0] == "rtn4" and "of" in rec[0][-1]
    assert [row[:2] for row in table["data"]][-2:] == [["rtn4", "original"], ["rtn4", "unlearned"]]
    # the session has a neighbours set: its columns sit before "seconds", with the probe's numbers
    assert table["headers"][-3:] == ["neighbours hit rate", "neighbours ROUGE-L", "seconds"]
    nb = s.probes["rtn4"]["unlearned"]["neighbours"]
    assert table["data"][-1][-3:-1] == [fmt(nb["answer_hit_rate"]), fmt(nb["rougeL_recall"])]
    sv = s.probes["rtn4"]["survival"]
    z = [[None if v is None else 100 * v for v in row] for row in sv["values"]]
    assert [list(row) for row in surv.data[0].z] == z
    assert shown["value"] == "rtn4"


def test_report_files(app, journey, tiny_dir):
    r, _ = journey
    files, preview, command = app.report_panel.export(r, quiet)
    names = sorted(Path(f).name for f in files)
    assert names == ["delta.safetensors", "forget.jsonl", "holdout.jsonl", "neighbours.jsonl", "report.html",
                     "report.json", "retain.jsonl"]
    rep = json.loads(Path([f for f in files if f.endswith("report.json")][0]).read_text())
    validate_report(rep)
    s = app.store.get("journey")
    assert rep["eval"]["original"]["forget"]["answer_hit_rate"] == s.evals["original"]["forget"]["answer_hit_rate"]
    assert rep["eval"]["unlearned"]["neighbours"]["n"] == 4 and rep["data"]["neighbours"]["file"] == "neighbours.jsonl"
    assert rep["mask"]["selected"] == s.result.mask.selected
    assert rep["config"]["unlearn"]["steps"] == 5 and rep["config"]["probes"] == list(s.probes)
    assert rep["model"]["spec"] == tiny_dir and rep["model"]["weights_sha256"] == weights_sha256(
        app.store.base(s).lm.model)
    assert "grin-ui audit report" in preview
    assert rep["rerun"] in command and "--neighbours neighbours.jsonl" in rep["rerun"]


def test_relearning_probe_stores_its_result_restores_the_model_and_reaches_the_report(app, journey):
    r, _ = journey
    s = app.store.get("journey")
    base = app.store.base(s).lm.model
    weights = {n: p.detach().clone() for n, p in base.named_parameters()}
    delta = s.delta
    summary, table, fig = app.probe_panel.relearn(r, quiet)
    rl = s.relearn
    # the shared base model is bit-identical afterwards, and the session's unlearned weights are untouched
    assert all(torch.equal(p, weights[n]) for n, p in base.named_parameters())
    assert s.delta is delta and not s.busy.locked()
    # the relearning trained on half of the forget set and measured the other half; the holdout is the reference
    split = rl["split"]["forget"]
    assert len(split["train"]) == 3 and sorted(split["train"] + split["eval"]) == list(range(6))
    assert rl["reference"] is not None and rl["forget"]["train_prob_after"] > rl["forget"]["train_prob_before"]
    # M(original) comes from the session's cached original evaluation
    rows = [s.evals["original"]["forget"]["examples"][i] for i in split["eval"]]
    assert rl["forget"]["original"]["answer_prob"] == pytest.approx(sum(x["answer_prob"] for x in rows) / 3)
    # the table: one row per metric with the recovery % and the reference gain, as stored
    hit = next(row for row in table if row[0] == "answer hit rate")
    assert hit[1:4] == [fmt(rl["forget"][k]["answer_hit_rate"]) for k in ("original", "before", "after")]
    assert hit[4] == fmt(rl["recovery"]["answer_hit_rate"], 3)
    assert hit[7] == fmt(rl["reference_gain"]["answer_hit_rate"], 3)
    assert "measured on the other 3" in summary and "reference (never-known facts)" in summary
    assert [t.name for t in fig.data] == ["forget (part not relearned on)", "reference (never-known facts)"]
    # the report carries it
    rep = S.report(app.store, s)
    validate_report(json.loads(json.dumps(rep)))
    assert rep["relearn"]["recovery"] == rl["recovery"] and rep["config"]["probes"][-1] == "relearn"
    assert rep["timings"]["probe_relearn"] == pytest.approx(rl["seconds"])


def test_errors_do_not_change_the_session(app, journey):
    r, _ = journey
    s = app.store.get("journey")
    delta = s.delta
    with pytest.raises(gr.Error, match="learning rate"):
        list(app.unlearn_panel.run("npo", "grin", 1.0, "global", 0.1, 0.0, 5, 1.0, "nll", 0, True, r, quiet))
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
        app.unlearn_panel.run("npo", "grin", 1.0, "global", 0.1, 1e-3, 100000, 1.0, "nll", 0, True, r, quiet)))
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


def test_neighbours_paste_and_clear(app):
    r = req("neighbours")
    preview, info = app.data_panel.paste_event("neighbours")(jsonl(tiny.RETAIN[8:]), r, quiet)
    assert len(preview) == 4 and "**4 neighbours examples** (question/answer)" in info
    s = app.store.get("neighbours")
    assert len(s.sets["neighbours"]) == 4
    preview, info = app.data_panel.clear_event("neighbours")(r)
    assert preview == [] and "No neighbours set" in info and "neighbours" not in s.sets


def test_builtin_example_with_neighbours_fills_every_set(app):
    from grin_ui.examples import list_examples, load_example

    name = next((n for n in list_examples() if "neighbours" in load_example(n)), None)
    if name is None:
        pytest.skip("no built-in example has a neighbours set")
    sets = load_example(name)
    out = app.data_panel.use_example(name, req("example-neighbours"), quiet)
    s = app.store.get("example-neighbours")
    assert set(s.sets) == set(sets)
    i = list(S.SET_NAMES).index("neighbours")
    assert len(out[2 * i]) == min(50, len(sets["neighbours"]))
    assert f"**{len(sets['neighbours'])} neighbours examples**" in out[2 * i + 1]


def test_unlearn_tab_split_unlearn_merge_and_dynamics(app):
    """The Unlearn tab's SPUNGE option and dynamics views: one row per subset run plus the merged delta, and the
    per-example curves of the merged run's subsets."""
    import dataclasses

    r = req("spunge")
    forget = [dataclasses.replace(x, attribute="born" if "born" in x.question else "writes") for x in tiny.FORGET]
    for name, recs in (("forget", forget), ("retain", tiny.RETAIN), ("holdout", tiny.HOLDOUT)):
        app.data_panel.paste_event(name)(jsonl(recs), r, quiet)
    outs = list(app.unlearn_panel.run("npo", "grin", 10.0, "global", 0.1, 5e-3, 40, 1.0, "nll", 0, True, r, quiet,
                                      True, "average", 0))
    fig, status, rows, curves, trade, scatter, box = outs[-1]
    assert "**Done.**" in status and box["visible"] is True
    assert [row[0] for row in rows] == ["original", "run born", "run writes", "merged (average)"]
    s = app.store.get("spunge")
    assert s.result.spunge["merge"] == "average" and s.delta.changed() == rows[-1][4] > 0
    outs = list(app.unlearn_panel.run("npo", "grin", 10.0, "global", 0.1, 5e-3, 8, 1.0, "nll", 0, False, r, quiet,
                                      False, "ties", 4))
    fig, status, rows, curves, trade, scatter, box = outs[-1]
    assert rows == [] and "Dynamics:" in status
    means = [t for t in curves.data if t.name and t.name.endswith("(mean)")]
    assert [t.name for t in means] == ["forget (mean)", "retain (mean)", "holdout (mean)"]
    assert list(means[0].x) == [0, 4, 8] and means[0].y[-1] < means[0].y[0]
