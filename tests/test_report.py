"""The report: one builder, one versioned schema, HTML rendered from the JSON, `grin-ui report --from`; the audit
page: verdict first, every figure with its definition, pictures, reproducibility block."""

import hashlib
import json
import re

import pytest
import torch

from grin_ui.cli import main
from grin_ui.config import RunConfig
from grin_ui.errors import GrinError
from grin_ui.definitions import METRIC_DEFINITIONS
from grin_ui.delta import DeltaEntry, SparseDelta
from grin_ui.report import (REPORT_VERSION, build_report, metrics_rows, read_report, render_html, schema,
                            validate_report, weights_sha256, write_report)
from grin_ui.verdict import Thresholds

SHA = "ab" * 32


def _set(hit, n=2, fluency=None):
    out = {"n": n, "answer_hit_rate": hit, "rougeL_recall": 0.5, "answer_prob": 0.25, "nll": 1.5,
           "examples": [{"question": "Who <b>?", "reference": "x", "generation": "y", "hit": False}]}
    if fluency:
        out["fluency"] = fluency
    return out


def _eval(hit, fluency=None):
    return {"forget": _set(hit, fluency=fluency), "retain": _set(1.0, 3), "neighbours": _set(0.75, 4),
            "seconds": 0.5}


def _report_kwargs(**over) -> dict:
    kw = dict(
        config=RunConfig(seed=3, probes=("nf4",)).to_dict(),
        model={"name": "tiny", "spec": "tiny-dir", "source": "local", "architecture": "LlamaForCausalLM",
               "parameters": 1000, "dtype": "float32", "device": "cpu", "weights_sha256": SHA, "taught_from": None},
        data={"forget": {"n": 2, "sha256": SHA, "source": "f.jsonl", "warnings": [], "file": "f.jsonl"}},
        mask={"selected": 10, "total": 1000, "selector": "grin", "scope": "global", "sparsity": 0.01,
              "threshold_log10": 1.5, "density": {"blocks": [0], "modules": ["q_proj"], "values": [[0.01]]},
              "changed": 10, "delta_entries": 10},
        eval={"original": _eval(1.0), "unlearned": _eval(0.0),
              "probes": {"nf4": {"original": _eval(1.0), "unlearned": _eval(0.5)}}},
        recovery={"nf4": {"answer_hit_rate": 50.0, "nll": float("nan")}},
        survival={"nf4": {"changed": 10, "survived": 4, "fraction": 0.4}},
        history=[{"step": 1, "loss": torch.tensor(0.5)}], timings={"score": 1.25, "total": 1.25},
        stopping={"stopped_at": 4, "checks": [{"step": 2, "forget_nll": 3.0}, {"step": 4, "forget_nll": 5.0}]},
        rerun="grin-ui run --config report.json --model tiny-dir --forget f.jsonl --out rerun",
    )
    kw.update(over)
    return kw


def _report(**over):
    return build_report(**_report_kwargs(**over))


def test_report_round_trip_and_html(tmp_path):
    rep = _report()
    validate_report(rep)
    j, h = write_report(rep, tmp_path)
    back = json.loads(j.read_text())
    assert back["grin_ui_report"] == REPORT_VERSION == 2 and schema()["properties"]["grin_ui_report"]["const"] == 2
    assert back["seed"] == 3 and back["history"][0]["loss"] == 0.5
    assert back["recovery"]["nf4"]["nll"] is None  # NaN -> null
    assert back["eval"]["probes"]["nf4"]["unlearned"]["forget"]["answer_hit_rate"] == 0.5
    assert back["versions"]["torch"] == torch.__version__
    page = h.read_text()
    assert page == render_html(back)  # the HTML is rendered from the JSON alone
    assert "Who &lt;b&gt;?" in page and "<b>?" not in page  # user text is escaped
    assert "10 of 1,000 scored weights selected (1 %)" in page
    assert "<td>—</td>" in page  # undefined recovery shown as a dash
    assert "<h3>Stopping</h3><p>The run stopped at step 4 of a budget of" in page
    assert "<code>stopped_at</code>" in page and "stopped at step 4" in page  # the table and the chart's line
    assert "grin-ui run --config report.json" in page
    assert [r[:3] for r in metrics_rows(back)][:6] == [
        ["original", "forget", 1.0], ["original", "retain", 1.0], ["original", "neighbours", 0.75],
        ["unlearned", "forget", 0.0], ["unlearned", "retain", 1.0], ["unlearned", "neighbours", 0.75]]
    assert [r[:2] for r in metrics_rows(back)][-3:] == [["nf4 · unlearned", s] for s in ("forget", "retain",
                                                                                          "neighbours")]
    assert "<script" not in page


def test_fluency_columns_when_measured():
    rep = _report(eval={"original": _eval(1.0, {"ends_rate": 1.0, "loop_rate": 0.0}),
                        "unlearned": _eval(0.0, {"ends_rate": 0.5, "loop_rate": 0.25, "gibberish_rate": 0.5}),
                        "probes": {}}, recovery={}, survival={})
    validate_report(rep)
    rows = metrics_rows(rep)
    assert rows[0][-3:] == [1.0, 0.0, None] and rows[3][-3:] == [0.5, 0.25, 0.5]
    assert rows[1][-3:] == [None, None, None]  # retain had no fluency figures
    page = render_html(rep)
    assert "<code>loop_rate</code>" in page and METRIC_DEFINITIONS["fluency.loop_rate"] in page


def test_schema_rejects_what_the_old_faces_wrote():
    rep = _report()
    for path, value, message in (
            (("model", "sha256"), SHA, "model: Additional properties are not allowed .'sha256'"),
            (("mask", "threshold"), 1.5, "mask: Additional properties are not allowed .'threshold'"),
            (("data", "extra"), {"n": 1}, "at data: 'extra' is not one of"),
            (("eval", "unlearned", "forget", "answer_hit_rate"), 1.5, "answer_hit_rate: 1.5 is greater than"),
            (("config", "probes"), ["nf5"], "config.probes.0: 'nf5' is not one of")):
        bad = json.loads(json.dumps(rep))
        *head, last = path
        node = bad
        for k in head:
            node = node[k]
        node[last] = value
        with pytest.raises(GrinError, match=message):
            validate_report(bad)
    bad = json.loads(json.dumps(rep))
    del bad["model"]["architecture"]
    with pytest.raises(GrinError, match="at model: 'architecture' is a required property"):
        validate_report(bad)
    bad["grin_ui_report"] = 1
    with pytest.raises(GrinError, match="not a grin-ui report of version 2"):
        validate_report(bad)


def test_report_command_rerenders_html(tmp_path, capsys):
    j, h = write_report(_report(), tmp_path / "run")
    h.unlink()
    assert main(["report", "--from", str(j)]) == 0
    assert h.read_text() == render_html(read_report(j))
    assert main(["report", "--from", str(j), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.html").read_text() == h.read_text()
    capsys.readouterr()
    broken = json.loads(j.read_text())
    broken["mask"]["threshold"] = broken["mask"].pop("threshold_log10")
    (tmp_path / "old.json").write_text(json.dumps(broken))
    assert main(["report", "--from", str(tmp_path / "old.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not follow the grin-ui report schema v2" in err[0] and "threshold" in err[0]
    (tmp_path / "not.json").write_text("{oops")
    assert main(["report", "--from", str(tmp_path / "not.json")]) == 2
    assert "is not a JSON report" in capsys.readouterr().err


def test_weights_hash_changes_with_one_weight():
    m = torch.nn.Linear(3, 2)
    h1 = weights_sha256(m)
    with torch.no_grad():
        m.weight[0, 0] += 1e-6
    assert weights_sha256(m) != h1 and len(h1) == 64


# ---------------------------------------------------------------------------------------------- the audit page


def test_verdict_is_built_stored_and_shown_first():
    rep = _report()
    validate_report(rep)
    v = rep["verdict"]
    assert [ln["key"] for ln in v["lines"]] == ["forgotten", "kept", "fluent", "mia", "quantization", "relearn"]
    by = {ln["key"]: ln["status"] for ln in v["lines"]}
    # forget 100 % -> 0 %; retain kept; no holdout (no mia); nf4 recovers 50 % (a concern); no relearning run
    assert by == {"forgotten": "pass", "kept": "pass", "fluent": "not measured", "mia": "not measured",
                  "quantization": "concern", "relearn": "not measured"}
    assert v["status"] == "concern" and v["thresholds"] == Thresholds().to_dict()
    page = render_html(rep)
    assert page.index("id='verdict'") < page.index("id='data'")  # the verdict comes first
    assert "Is it really gone — even after quantization?" in page and v["headline"] in page
    for ln in v["lines"]:
        assert ln["rule"].replace("<", "&lt;").replace(">", "&gt;") in page.replace("&#x27;", "'")
    assert page.count("NOT MEASURED") >= 3
    strict = build_report(**_report_kwargs(), thresholds=Thresholds(recovery_concern=40.0))
    assert strict["verdict"]["status"] == "fail" and strict["verdict"]["thresholds"]["recovery_concern"] == 40.0


def test_write_report_with_delta_records_its_sha256(tmp_path):
    delta = SparseDelta({"w": DeltaEntry(torch.tensor([1, 5]), torch.zeros(2), torch.tensor([0.5, -0.25]))})
    rep = _report()
    j, h = write_report(rep, tmp_path, delta=delta)
    raw = (tmp_path / "delta.safetensors").read_bytes()
    assert rep["files"] == {"delta": "delta.safetensors", "delta_sha256": hashlib.sha256(raw).hexdigest()}
    back = read_report(j)  # schema-valid with the files block
    assert back["files"] == rep["files"]
    page = h.read_text()
    assert f"<code class='hash'>{rep['files']['delta_sha256']}</code>" in page
    assert f"<code class='hash'>{SHA}</code>" in page  # model weights and data hashes
    assert SparseDelta.load(tmp_path / "delta.safetensors").nnz == delta.nnz
    bad = json.loads(j.read_text())
    bad["files"]["delta_sha256"] = "not-a-hash"
    with pytest.raises(GrinError, match="files.delta_sha256"):
        validate_report(bad)


def _metric_keys(rep: dict) -> set[str]:
    """Every metric key of every evaluated state: per set (with fluency), and of mia / utility / semeval."""
    ev = rep["eval"]
    states = [ev["original"], ev["unlearned"]] + [s for p in ev["probes"].values() for s in p.values()]
    keys = set()
    for st in states:
        for k, v in st.items():
            if isinstance(v, dict) and "answer_prob" in v:  # a set: its metrics and those of its blocks
                keys |= {m for m, x in v.items() if m != "examples" and not isinstance(x, dict)}
                keys |= {m for x in v.values() if isinstance(x, dict) for m in x}
            elif isinstance(v, dict):
                keys |= set(v)
            else:
                keys.add(k)
    return keys


def test_every_eval_metric_appears_with_its_key_and_the_page_is_self_contained():
    full = _eval(0.0, {"ends_rate": 1.0, "loop_rate": 0.0, "gibberish_rate": 0.0, "gibberish_nll": 1.2})
    full["mia"] = {"loss_auc": 0.45, "zlib_auc": 0.5, "mink_auc": 0.6, "minkpp_auc": 0.4, "score": 0.9,
                   "score_from": "loss_auc", "n_member": 2, "n_nonmember": 2, "brand_new_attack_auc": 0.55}
    full["utility"] = {"perplexity": 12.5, "perplexity_tokens": 100, "mc_accuracy": 0.5, "mc_n": 4}
    full["semeval"] = {"label": "SemEval-style", "aggregate": 0.8, "mia_score": 0.9, "utility_accuracy": 0.5,
                       "final": 0.73, "missing": []}
    full["forget"]["brand_new_metric"] = 0.125
    full["forget"]["later_per_set_block"] = {"deep_key": 0.5}
    full["later_block"] = {"x": 1}
    rep = _report(eval={"original": _eval(1.0), "unlearned": full,
                        "probes": {"nf4": {"original": _eval(1.0), "unlearned": _eval(0.5)}}})
    validate_report(rep)
    page = render_html(rep)
    missing = [k for k in _metric_keys(rep) if f"<code>{k}</code>" not in page]
    assert not missing, missing
    assert "brand_new_attack_auc" in page and "later_block" in page  # later additions are never dropped
    assert "<code>deep_key</code>" in page and "<code>brand_new_metric</code>" in page
    assert METRIC_DEFINITIONS["mia.loss_auc"] in page and METRIC_DEFINITIONS["utility.mc_accuracy"] in page
    # self-contained: no script, no external resource, pictures inline
    assert "<script" not in page and not re.search(r"""(src|href)=['"](https?:|//)""", page)
    assert "<link" not in page and page.count("<svg") >= 4  # density map, loss curve, checks, metrics chart


def test_pictures_of_a_full_report():
    surv = {"changed": 10, "survived": 4, "fraction": 0.4, "blocks": [0, 1], "modules": ["q_proj", "v_proj"],
            "values": [[0.5, None], [0.25, 1.0]], "share_values": [[0.5, None], [0.2, 1.0]],
            "ratio_hist": {"log10_edges": [-2.0, -1.0, 0.0, 1.0], "counts": [3, 4, 3], "n": 10,
                           "share_at_least_half": 0.4}}
    mask = dict(_report_kwargs()["mask"], scores={"blocks": [0], "modules": ["q_proj"], "values": [[1.25]],
                                                  "hist": {"log10_edges": [0.0, 1.0, 2.0], "counts": [5, 2]}})
    rep = _report(survival={"nf4": surv}, mask=mask,
                  history=[{"step": i, "forget_loss": 5.0 - i, "retain_loss": 0.1, "loss": 5.1 - i,
                            **({"check": {"step": i, "forget_nll": i, "reference_nll": 3.0}} if i % 2 == 0 else {})}
                           for i in range(1, 7)])
    validate_report(rep)
    page = render_html(rep)
    for title in ("Influence (GRI) score per block × module", "Selected weights per block × module",
                  "Distribution of log10 GRI scores", "Unlearning losses per step", "Stop-when-forgotten checks",
                  "Metrics: original vs unlearned", "Recovery under quantization",
                  "Changes whose quantization code moves (%) — nf4", "|Δw| relative to the quantization bin — nf4"):
        assert f">{title}" in page, title
    assert "threshold 1.5: 10 selected" in page  # the mask threshold on the score histogram
    assert "40.0 % of the changes are ≥ 0.5 bin" in page
    survival_map = page[page.index("Changes whose quantization code moves"):]
    assert ">50</text>" in survival_map and ">25</text>" in survival_map  # cells labelled in %


def test_rendering_is_a_pure_function_of_the_json(tmp_path):
    j, h = write_report(_report(), tmp_path)
    first = h.read_bytes()
    assert main(["report", "--from", str(j), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "report.html").read_bytes() == first
    old = json.loads(j.read_text())
    del old["verdict"]  # a report written before verdicts: rendered with the default thresholds
    assert "the defaults (this report recorded no verdict)" in render_html(old)
    assert render_html(old).count("<tr class='vline'>") == 6


def test_cli_run_report_is_valid_and_complete(tiny_dir, tmp_path, capsys):
    from tests.test_journey import data_files

    out = tmp_path / "out"
    assert main(["run", "--model", tiny_dir, *data_files(tmp_path), "--out", str(out), "--sparsity", "0.1",
                 "--steps", "12", "--lr", "5e-3", "--probes", "rtn4", "--seed", "3", "--no-utility"]) == 0
    rep = read_report(out / "report.json")  # schema-valid, verdict included
    assert {ln["key"] for ln in rep["verdict"]["lines"]} >= {"forgotten", "kept", "quantization"}
    assert rep["verdict"]["lines"][0]["status"] in ("pass", "concern", "fail")
    assert rep["files"]["delta_sha256"] == hashlib.sha256((out / "delta.safetensors").read_bytes()).hexdigest()
    assert len(rep["mask"]["scores"]["values"]) == 2 and sum(rep["mask"]["scores"]["hist"]["counts"]) == \
        rep["mask"]["total"]
    assert rep["mask"]["scores"]["modules"] == rep["mask"]["density"]["modules"]  # model order, like the density
    page = (out / "report.html").read_text()
    missing = [k for k in _metric_keys(rep) if f"<code>{k}</code>" not in page]
    assert not missing, missing
    assert len(page.encode()) < 600_000
    first = page
    (out / "report.html").unlink()
    assert main(["report", "--from", str(out / "report.json")]) == 0
    assert (out / "report.html").read_text() == first  # re-renders identically
    capsys.readouterr()


def test_missing_parts_render_as_not_measured():
    rep = _report(recovery={}, survival={}, history=[], stopping=None,
                  eval={"original": {"forget": _set(1.0)}, "unlearned": {"forget": _set(1.0)}, "probes": {}})
    validate_report(rep)
    page = render_html(rep)
    for text in ("Not measured: membership inference needs a holdout set.",
                 "Not measured: no quantization probe was run.", "Not measured: the relearning probe was not run.",
                 "Not measured: the run skipped utility"):
        assert text in page, text
    by = {ln["key"]: ln["status"] for ln in rep["verdict"]["lines"]}
    assert by["forgotten"] == "fail" and by["kept"] == by["mia"] == by["quantization"] == "not measured"
    assert rep["verdict"]["headline"].startswith("No — the unlearned model still answers")
