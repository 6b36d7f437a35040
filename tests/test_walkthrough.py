"""The default walkthrough on the bundled model (slow): `grin-ui run` with the defaults on the built-in examples —
real-knowledge, the near-neighbour world-capitals (forget 8 capitals, keep the others, including the neighbours that
nothing drills) and fictitious authors after teaching. Thresholds are the quality targets of SPEC §8 and the issue
on precise unlearning, as measured by benchmarks/tune.py (README, "Quality"); where a target is not met the test
asserts the figure reached, with the gap said next to it."""

import json
import statistics

import pytest

from grin_ui.cli import main
from grin_ui.config import RunConfig
from grin_ui.examples import examples_dir, load_example
from grin_ui.journey import run_journey
from grin_ui.models import load_model
from grin_ui.teach import teach_cached

pytestmark = pytest.mark.slow


def hits(ev: dict, set_name: str) -> dict[str, bool]:
    return {e["question"]: e["hit"] for e in ev[set_name]["examples"]}


def kept(before: dict, after: dict, name: str) -> float:
    return after[name]["answer_hit_rate"] / before[name]["answer_hit_rate"]


def test_cli_run_default_forgets_a_real_fact(tmp_path):
    rk = examples_dir() / "real-knowledge"
    out = tmp_path / "out"
    code = main(["run", "--model", "default", "--forget", str(rk / "forget.jsonl"), "--retain",
                 str(rk / "retain.jsonl"), "--holdout", str(rk / "holdout.jsonl"), "--out", str(out),
                 "--probes", "nf4", "--no-utility"])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    before, after = rep["eval"]["original"], rep["eval"]["unlearned"]
    france = "What is the capital of France?"
    assert hits(before, "forget")[france] and not hits(after, "forget")[france]
    assert after["forget"]["answer_hit_rate"] <= 0.10
    assert kept(before, after, "retain") >= 0.85
    assert after["forget"]["fluency"]["loop_rate"] == 0 and after["forget"]["fluency"]["gibberish_rate"] <= 0.125
    assert rep["stopping"]["stopped_at"] is not None  # forgotten within the budget
    assert "nf4" in rep["recovery"] and rep["mask"]["selected"] == round(0.01 * rep["mask"]["total"])


def test_near_neighbours_are_kept():
    """world-capitals with the defaults, seeds 0–2 (the issue's targets are medians over three seeds). The outcome is
    a chaotic function of the run (seed, mask, summation order), so the medians are asserted. Measured with this
    test's path (run_journey, the machine's two threads): neighbours 86 / 82 / 86 % of before (median 86 %, target
    85 %), AUC 0.60 / 0.52 / 0.37, retain 98 / 98 / 100 %, stopped at steps 52 / 56 / 60 — the same figures as
    benchmarks/tune.py with one thread (README, "Quality"). Every other target at every seed."""
    sets = load_example("world-capitals")
    lm = load_model("default")
    runs = []
    for seed in (0, 1, 2):
        rep, _ = run_journey(lm, sets, RunConfig(utility=False, probes=(), seed=seed))
        before, after = rep["eval"]["original"], rep["eval"]["unlearned"]
        runs.append({"seed": seed, "forget": after["forget"]["answer_hit_rate"],
                     "retain": kept(before, after, "retain"), "neighbours": kept(before, after, "neighbours"),
                     "auc": after["mia"]["loss_auc"], "stopped_at": rep["stopping"]["stopped_at"]})
        print("near-neighbour defaults:", runs[-1])  # shown with -s, and in the report of a failure
        assert after["forget"]["answer_hit_rate"] <= 0.10
        assert kept(before, after, "retain") >= 0.90
        for name in ("retain", "neighbours"):
            assert after[name]["fluency"]["ends_rate"] >= 0.9 and after[name]["fluency"]["loop_rate"] == 0
        f = after["forget"]["fluency"]
        assert f["loop_rate"] == 0 and f["gibberish_rate"] == 0 and f["refusal_rate"] >= 0.5
    assert statistics.median(r["neighbours"] for r in runs) >= 0.85
    assert 0.3 <= statistics.median(r["auc"] for r in runs) <= 0.7


def test_fictitious_authors_walkthrough(tmp_path_factory):
    sets = {k: v.records for k, v in load_example("fictitious-authors").items()}
    lm = load_model("default")
    path, taught = teach_cached(lm, sets["forget"], sets["retain"], root=tmp_path_factory.mktemp("taught"))
    assert taught.reached and taught.after["forget"] >= 0.9  # SPEC §8: after teaching, forget hit rate ≥ 90 %
    lm = load_model(str(path))
    rep, _ = run_journey(lm, sets, RunConfig(utility=False, probes=()))  # the NF4 probe: the real-knowledge test
    before, after = rep["eval"]["original"], rep["eval"]["unlearned"]
    assert before["forget"]["answer_hit_rate"] >= 0.9
    assert after["forget"]["answer_hit_rate"] <= 0.20
    assert kept(before, after, "retain") >= 0.85
    assert before["holdout"]["answer_hit_rate"] <= 0.1  # never taught
    # the refusal alone leaves the taught answers far likelier than never-taught ones (membership-inference AUC 1.00
    # with IDK); the default then pushes them with NPO to that level (measured with benchmarks/tune.py, one thread,
    # seeds 0–2: AUC 0.56 / 0.54 / 0.47; see the README's "Quality")
    checks = rep["stopping"]["checks"]
    print("fictitious-authors defaults:", after["mia"]["loss_auc"], [c.get("pushed") for c in checks])
    assert any(c.get("pushed") for c in checks) and 0.3 <= after["mia"]["loss_auc"] <= 0.7
