import json

import torch

from grin_ui.report import build_report, metrics_rows, render_html, weights_sha256, write_report


def _eval(hit):
    return {"forget": {"n": 2, "answer_hit_rate": hit, "rougeL_recall": 0.5, "answer_prob": 0.25, "nll": 1.5,
                       "examples": [{"question": "Who <b>?", "reference": "x", "generation": "y", "hit": False}]},
            "retain": {"n": 3, "answer_hit_rate": 1.0, "rougeL_recall": 0.9, "answer_prob": 0.8, "nll": 0.2}}


def test_report_round_trip_and_html(tmp_path):
    rep = build_report(
        config={"seed": 3, "mask": {"sparsity": 0.01}}, model={"name": "tiny", "weights_sha256": "ab"},
        data={"forget": {"n": 2, "sha256": "cd", "source": "f.jsonl"}},
        mask={"selected": 10, "total": 1000, "selector": "grin", "scope": "global"},
        eval={"original": _eval(1.0), "unlearned": _eval(0.0), "probes": {"nf4": {"unlearned": _eval(0.5)}}},
        recovery={"nf4": {"answer_hit_rate": 50.0, "nll": None}}, survival={"nf4": {"changed": 10, "survived": 4}},
        history=[{"step": 1, "loss": torch.tensor(0.5)}], timings={"score": 1.25},
    )
    j, h = write_report(rep, tmp_path)
    back = json.loads(j.read_text())
    assert back["seed"] == 3 and back["history"][0]["loss"] == 0.5
    assert back["eval"]["probes"]["nf4"]["unlearned"]["forget"]["answer_hit_rate"] == 0.5
    assert back["versions"]["torch"] == torch.__version__
    page = h.read_text()
    assert "Who &lt;b&gt;?" in page and "<b>?" not in page  # user text is escaped
    assert "10 of 1000 scored weights selected (1 %)" in page
    assert "<td>—</td>" in page  # undefined recovery shown as a dash
    assert [r[:3] for r in metrics_rows(back)] == [
        ["original", "forget", 1.0], ["original", "retain", 1.0], ["unlearned", "forget", 0.0],
        ["unlearned", "retain", 1.0], ["nf4 · unlearned", "forget", 0.5], ["nf4 · unlearned", "retain", 1.0]]
    assert "<script" not in render_html(back)


def test_weights_hash_changes_with_one_weight():
    m = torch.nn.Linear(3, 2)
    h1 = weights_sha256(m)
    with torch.no_grad():
        m.weight[0, 0] += 1e-6
    assert weights_sha256(m) != h1 and len(h1) == 64
