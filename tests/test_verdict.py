"""The auditor's verdict (grin_ui.verdict) on constructed reports: every threshold with numbers on both sides of it,
pass / concern / fail / not measured, configurable thresholds recorded in the verdict."""

import pytest

from grin_ui.verdict import Thresholds, compute_verdict


def _set(hit, fluency=None):
    out = {"n": 10, "answer_hit_rate": hit, "rougeL_recall": hit, "answer_prob": hit, "nll": 1.0}
    if fluency is not None:
        out["fluency"] = fluency
    return out


OK_FLUENCY = {"ends_rate": 1.0, "loop_rate": 0.0, "gibberish_rate": 0.0}


def report(forget=(1.0, 0.0), retain=(1.0, 1.0), neighbours=(1.0, 1.0), fluency=None, auc=0.5, recovery=None,
           survival=None, relearn=None, holdout=True):
    """A report dict with just what the verdict reads. ``fluency``: {set: fluency dict} of the unlearned model;
    ``recovery`` / ``survival``: per probe; None leaves the part out."""
    fluency = fluency if fluency is not None else {s: OK_FLUENCY for s in ("forget", "retain", "neighbours")}
    ev = {"original": {}, "unlearned": {}, "probes": {}}
    for name, pair in (("forget", forget), ("retain", retain), ("neighbours", neighbours)):
        if pair is None:
            continue
        ev["original"][name] = _set(pair[0], OK_FLUENCY)
        ev["unlearned"][name] = _set(pair[1], fluency.get(name))
    if holdout:
        ev["original"]["mia"] = {"loss_auc": 1.0}
        ev["unlearned"]["mia"] = {"loss_auc": auc}
    for p in recovery or {}:
        ev["probes"][p] = {"original": {"forget": _set(1.0)}, "unlearned": {"forget": _set(0.0)}}
    rep = {"eval": ev, "recovery": recovery or {}, "survival": survival or {}}
    if relearn is not None:
        rep["relearn"] = relearn
    return rep


def line(rep, key, t=None):
    return next(ln for ln in compute_verdict(rep, t)["lines"] if ln["key"] == key)


@pytest.mark.parametrize("after, status", [(0.0, "pass"), (0.10, "pass"), (0.11, "concern"), (0.25, "concern"),
                                           (0.26, "fail"), (1.0, "fail")])
def test_forgotten_thresholds(after, status):
    ln = line(report(forget=(1.0, after)), "forgotten")
    assert ln["status"] == status
    assert "≤ 10 %" in ln["rule"] and "≤ 25 %" in ln["rule"]
    assert f"100 % → {100 * after:.0f} %" in ln["answer"]


def test_forgotten_not_known_before_is_a_concern_and_missing_is_not_measured():
    ln = line(report(forget=(0.05, 0.0)), "forgotten")
    assert ln["status"] == "concern" and "little to forget" in ln["items"][1]["text"]
    assert line(report(forget=(0.5, 0.0)), "forgotten")["status"] == "pass"
    rep = report()
    del rep["eval"]["unlearned"]["forget"]
    assert line(rep, "forgotten")["status"] == "not measured"


@pytest.mark.parametrize("retain_after, status", [(0.90, "pass"), (0.89, "concern"), (0.75, "concern"),
                                                  (0.74, "fail")])
def test_kept_retain_thresholds(retain_after, status):
    ln = line(report(retain=(1.0, retain_after)), "kept")
    assert ln["status"] == status and ln["items"][0]["status"] == status
    assert ln["items"][0]["value"] == pytest.approx(retain_after)


@pytest.mark.parametrize("after, status", [(0.85, "pass"), (0.84, "concern"), (0.70, "concern"), (0.69, "fail")])
def test_kept_neighbours_thresholds_relative_to_before(after, status):
    # before 0.8: the ratio is after / 0.8
    ln = line(report(neighbours=(0.8, after * 0.8)), "kept")
    assert ln["items"][1]["status"] == status and ln["status"] == status
    assert ln["items"][1]["value"] == pytest.approx(after)


def test_kept_not_measured_parts():
    ln = line(report(neighbours=None), "kept")
    assert ln["status"] == "pass"  # judged on retain alone, and says so
    assert ln["items"][1]["status"] == "not measured" and "no neighbours set" in ln["items"][1]["text"]
    assert ln["answer"] == "Yes: share of the hit rate before kept — retain 100 %; not measured: neighbours."
    ln = line(report(retain=(0.0, 0.0), neighbours=None), "kept")  # nothing known before: nothing to keep
    assert ln["status"] == "not measured"
    assert line(report(retain=None, neighbours=None), "kept")["status"] == "not measured"


@pytest.mark.parametrize("ends, status", [(0.90, "pass"), (0.89, "concern"), (0.75, "concern"), (0.74, "fail")])
def test_fluent_ends_threshold_on_kept_sets(ends, status):
    flu = {"forget": {**OK_FLUENCY, "ends_rate": 0.0},  # forget answers may run on: not judged on ends
           "retain": OK_FLUENCY, "neighbours": {**OK_FLUENCY, "ends_rate": ends}}
    ln = line(report(fluency=flu), "fluent")
    assert ln["status"] == status and ln["items"][0]["status"] == status


@pytest.mark.parametrize("rate, status", [(0.0, "pass"), (0.05, "concern"), (0.10, "concern"), (0.11, "fail")])
@pytest.mark.parametrize("key, index", [("loop_rate", 1), ("gibberish_rate", 2)])
def test_fluent_loops_and_gibberish_thresholds(rate, status, key, index):
    flu = {"forget": {**OK_FLUENCY, key: rate}, "retain": OK_FLUENCY, "neighbours": OK_FLUENCY}
    ln = line(report(fluency=flu), "fluent")
    assert ln["items"][index]["status"] == status and ln["status"] == status


def test_fluent_not_measured_without_fluency():
    ln = line(report(fluency={}), "fluent")
    assert ln["status"] == "not measured" and all(i["status"] == "not measured" for i in ln["items"])


@pytest.mark.parametrize("auc, status", [(0.5, "pass"), (0.3, "pass"), (0.7, "pass"), (0.29, "concern"),
                                         (0.71, "concern"), (0.2, "concern"), (0.8, "concern"), (0.19, "fail"),
                                         (0.81, "fail"), (0.0, "fail")])
def test_mia_band(auc, status):
    ln = line(report(auc=auc), "mia")
    assert ln["status"] == status
    assert "0.3–0.7" in ln["rule"]
    if auc < 0.2:
        assert "LESS likely than facts the model never saw" in ln["answer"]
    if auc > 0.8:
        assert "still stands out" in ln["answer"]


def test_mia_not_measured_without_holdout():
    ln = line(report(holdout=False), "mia")
    assert ln["status"] == "not measured" and "holdout" in ln["answer"]


@pytest.mark.parametrize("pct, status", [(0.0, "pass"), (10.0, "pass"), (10.5, "concern"), (50.0, "concern"),
                                         (50.1, "fail"), (-20.0, "pass")])
def test_quantization_recovery_thresholds(pct, status):
    rep = report(recovery={"nf4": {"answer_hit_rate": pct, "rougeL_recall": 0.0, "answer_prob": None}},
                 survival={"nf4": {"changed": 100, "survived": 90, "fraction": 0.9}})
    ln = line(rep, "quantization")
    assert ln["status"] == status and ln["items"][0]["label"] == "nf4"


def test_quantization_worst_metric_survival_and_missing():
    # the worst defined recovery decides; the truth ratio is not among the judged metrics
    rep = report(recovery={"fp4": {"answer_hit_rate": 0.0, "answer_prob": 60.0, "truth_ratio": 500.0}},
                 survival={"fp4": {"changed": 10, "survived": 9, "fraction": 0.9}})
    ln = line(rep, "quantization")
    assert ln["status"] == "fail" and "recovery 60 % (answer_prob)" in ln["answer"]
    rep = report(recovery={"fp4": {"answer_hit_rate": 0.0, "truth_ratio": 500.0}},
                 survival={"fp4": {"changed": 10, "survived": 5, "fraction": 0.5}})
    assert line(rep, "quantization")["status"] == "pass"
    rep["survival"]["fp4"]["fraction"] = 0.49  # most of the update rounded away: a concern, never a fail
    assert line(rep, "quantization")["status"] == "concern"
    rep = report(recovery={"rtn4": {"answer_hit_rate": None}}, survival={"rtn4": {"fraction": 0.8}})
    ln = line(rep, "quantization")
    assert ln["status"] == "pass" and "recovery undefined" in ln["items"][0]["text"]
    ln = line(report(), "quantization")
    assert ln["status"] == "not measured" and ln["items"] == [] and "no quantization probe" in ln["answer"]


def test_quantization_worst_probe_decides():
    rep = report(recovery={"nf4": {"answer_hit_rate": 0.0}, "fp4": {"answer_hit_rate": 80.0}},
                 survival={"nf4": {"fraction": 0.9}, "fp4": {"fraction": 0.9}})
    ln = line(rep, "quantization")
    assert [i["status"] for i in ln["items"]] == ["pass", "fail"] and ln["status"] == "fail"


@pytest.mark.parametrize("pct, status", [(10.0, "pass"), (11.0, "concern"), (50.0, "concern"), (51.0, "fail")])
def test_relearn_thresholds(pct, status):
    rl = {"config": {"steps": 10}, "recovery": {"answer_hit_rate": pct, "answer_prob": 1.0},
          "reference_gain": {"answer_hit_rate": 5.0}}
    ln = line(report(relearn=rl), "relearn")
    assert ln["status"] == status and "after 10 fine-tuning steps" in ln["answer"]
    assert "never-known facts: 5 %" in ln["answer"]


def test_relearn_not_measured():
    assert line(report(), "relearn")["status"] == "not measured"
    assert line(report(relearn={"recovery": None}), "relearn")["status"] == "not measured"


def test_overall_status_headline_and_configurable_thresholds():
    rep = report(forget=(1.0, 0.2), recovery={"nf4": {"answer_hit_rate": 0.0}}, survival={"nf4": {"fraction": 0.9}})
    v = compute_verdict(rep)
    assert v["status"] == "concern"  # forgotten: 20 % still answered
    assert v["headline"].startswith("Partly")
    assert "1 not measured (relearning)" in v["summary"]
    strict = Thresholds(forget_hit_pass=0.05, forget_hit_concern=0.15)
    v2 = compute_verdict(rep, strict)
    assert v2["status"] == "fail" and v2["headline"].startswith("No")
    assert v2["thresholds"]["forget_hit_pass"] == 0.05 and "≤ 5 %" in v2["lines"][0]["rule"]
    assert Thresholds.from_dict(v2["thresholds"]) == strict
    lenient = Thresholds(forget_hit_pass=0.25)
    assert compute_verdict(rep, lenient)["status"] == "pass"
    # every line not measured: so is the verdict
    v3 = compute_verdict({"eval": {}})
    assert v3["status"] == "not measured" and {ln["status"] for ln in v3["lines"]} == {"not measured"}


def test_headline_names_the_failing_checks():
    rep = report(retain=(1.0, 0.5), recovery={"nf4": {"answer_hit_rate": 70.0}}, survival={"nf4": {"fraction": 0.9}})
    v = compute_verdict(rep)
    assert v["status"] == "fail"
    assert v["headline"].startswith("Only at full precision") and "But: kept fails" in v["headline"]
