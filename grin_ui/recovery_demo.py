"""Does quantization undo unlearning? Full fine-tuning vs GRIN, side by side (the probe tab's built-in comparison).

    res = compare(lm, sets)                                    # default arms: "full fine-tuning" and "GRIN"
    res = compare(lm, sets, kinds=("nf4", "fp4", "rtn4"), arms={"gentle": gentle_config(lr=1e-5, steps=20),
                                                               "grin": grin_config()})
    print("\\n".join(table_lines(res)))

Zhang et al. (ICLR 2025) observed that an LLM unlearned by full fine-tuning with a small learning rate gets its
forgotten knowledge back once it is quantized to 4 bits: the update of each weight is much smaller than a
quantization bin, so most weights round back to the code they had before. GRIN's update is sparse and large (a few
weights, a large learning rate), so it survives. This module runs both arms on the same data with the same seed:

* **gentle** (:func:`gentle_config`): selector "none" (every weight trainable), no noise, a fixed number of steps
  (stop-when-forgotten off), a small learning rate, an objective that lowers the forget answers' likelihood;
* **GRIN** (:func:`grin_config`): the defaults of :class:`grin_ui.config.RunConfig`.

For each arm: unlearn (grin_ui.journey.unlearn), evaluate at full precision, then for each quantization kind build the
quantized *unlearned* model (one copy alive at a time), evaluate it on the forget and retain sets, and compute the
recovery % = 100 · (M(Q(unlearned)) − M(unlearned)) / (M(original) − M(unlearned)) of the forget answer hit rate,
answer probability and NLL (SPEC §5), plus the code-level survival map (grin_ui.survival: fraction of the changed
weights whose quantization code moves, and the median |Δw| / bin width). Recovery is measured against the
*full-precision* original, as in SPEC §5 — the quantized original is not evaluated (it would add one quantization
and evaluation per kind without entering the formula).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Collection, Mapping

from grin_ui.config import PROBE_KINDS, GentleConfig, RunConfig  # noqa: F401 - PROBE_KINDS re-exported
from grin_ui.errors import GrinError
from grin_ui.evaluate import evaluate_sets
from grin_ui.journey import check_sets, unlearn
from grin_ui.journey import relearn as journey_relearn
from grin_ui.metrics import recovery_pct
from grin_ui.quantize import quantized
from grin_ui.survival import survival_map

KINDS = ("nf4", "fp4", "rtn4")
METRICS = ("answer_hit_rate", "answer_prob", "nll")  # forget metrics whose recovery is reported
GENTLE = "full fine-tuning"
_G = GentleConfig()  # the gentle arm of the built-in comparison (measured: README, benchmarks/recovery.py)
GENTLE_OBJECTIVE, GENTLE_LR, GENTLE_STEPS = _G.objective, _G.lr, _G.steps
GRIN = "GRIN"


def gentle_config(objective: str = GENTLE_OBJECTIVE, lr: float = GENTLE_LR, steps: int = GENTLE_STEPS, seed: int = 0,
                  base: RunConfig | None = None) -> RunConfig:
    """Unmasked unlearning (selector "none", every weight), no noise, a fixed budget of ``steps`` (the
    stop-when-forgotten rule off), learning rate ``lr``; the rest of ``base`` (default RunConfig()) unchanged.
    No utility metrics and no probes (the comparison runs its own)."""
    cfg = base or RunConfig()
    return replace(cfg, mask=replace(cfg.mask, selector="none"), noise=replace(cfg.noise, scale=0.0),
                   unlearn=replace(cfg.unlearn, objective=objective, lr=lr, steps=steps,
                                   stop_when_forgotten=False),
                   seed=seed, probes=(), utility=False)


def grin_config(seed: int = 0, base: RunConfig | None = None) -> RunConfig:
    """GRIN with ``base``'s settings (default RunConfig()), without utility metrics or probes."""
    return replace(base or RunConfig(), seed=seed, probes=(), utility=False)


def default_arms(seed: int = 0) -> dict[str, RunConfig]:
    """The built-in comparison: the gentle full fine-tune and GRIN with its defaults, same seed."""
    return {GENTLE: gentle_config(seed=seed), GRIN: grin_config(seed=seed)}


def _forget_metrics(ev: dict) -> dict:
    f = ev["forget"]
    out = {m: f.get(m) for m in METRICS}
    if "retain" in ev:
        out["retain_hit_rate"] = ev["retain"].get("answer_hit_rate")
    return out


def recovery_row(original: dict, unlearned: dict, quantized_unlearned: dict) -> dict[str, float | None]:
    """Recovery % of each forget metric in METRICS (grin_ui.metrics.recovery_pct; None where undefined). Inputs are
    evaluations ({"forget": {...}}); for NLL the formula is the same (NLL rises when forgetting, so a positive
    recovery still means the quantized model is closer to the original)."""
    o, u, q = (e["forget"] for e in (original, unlearned, quantized_unlearned))
    return {m: recovery_pct(o[m], u[m], q[m]) for m in METRICS if m in o and m in u and m in q}


def compare(lm, sets: Mapping, arms: Mapping[str, RunConfig] | None = None, kinds=KINDS,
            original_eval: dict | None = None, progress: Callable[..., None] | None = None, cancel=None,
            relearn: bool | Collection[str] = False, on_arm: Callable[[dict], None] | None = None) -> dict:
    """Run every arm on ``sets`` (forget, retain, holdout as in grin_ui.journey) and probe each unlearned model.

    ``lm.model`` holds the original weights before and after. ``original_eval``: an evaluation of the original model
    on the same sets (computed when None, without utility). Returns {"original": {forget metrics},
    "arms": {name: {"config", "steps_run", "changed", "unlearned": {forget metrics}, "seconds",
    "probes": {kind: {"quantized": {forget metrics}, "recovery": {metric: %}, "survival": {"fraction",
    "scale_only_fraction", "share", "median_ratio", "median_abs_delta", "median_bin_width", "share_at_least_half"}}}}},
    "kinds"}. With ``relearn`` (True, or the names of the arms), each arm (or each named one) also gets "relearn":
    the relearning probe (grin_ui.journey.relearn with the arm's RunConfig.relearn) of its unlearned model.
    ``on_arm(result so far)`` is called after each arm."""
    say = progress or (lambda message, fraction=None: None)
    arms = dict(arms or default_arms())
    if not arms:
        raise GrinError("The comparison needs at least one arm.")
    first = next(iter(arms.values()))
    recs = check_sets(sets, first)
    fr = {k: v for k, v in recs.items() if k in ("forget", "retain")}
    ev_cfg = replace(first.eval, truth_ratio=False)
    if original_eval is None:
        say("Evaluating the original model")
        original_eval = evaluate_sets(lm.model, lm.tokenizer, recs, ev_cfg, utility=False)
    out: dict = {"original": _forget_metrics(original_eval), "arms": {}, "kinds": list(kinds)}
    for i, (name, cfg) in enumerate(arms.items()):
        t0 = time.perf_counter()
        say(f"{name}: unlearning", i / len(arms))
        res = unlearn(lm, recs, cfg, progress=lambda m, f=None: say(f"{name}: {m}"), cancel=cancel)
        if res.cancelled or res.delta is None:
            raise GrinError("Cancelled; the model was restored.")
        delta = res.delta
        with delta.applied(lm.model):
            after = evaluate_sets(lm.model, lm.tokenizer, recs, ev_cfg, utility=False)
        say(f"{name}: {res.stats.get('steps_run')} steps, {delta.changed():,} weights changed; forget hit rate "
            f"{_num(out['original']['answer_hit_rate'], '.2f')} → {_num(after['forget']['answer_hit_rate'], '.2f')}, "
            f"P(a|q) {_num(out['original']['answer_prob'])} → {_num(after['forget']['answer_prob'])}")
        arm = {"config": {"selector": cfg.mask.selector, "sparsity": cfg.mask.sparsity,
                          "objective": cfg.unlearn.objective, "lr": cfg.unlearn.lr, "steps": cfg.unlearn.steps,
                          "stop_when_forgotten": cfg.unlearn.stop_when_forgotten, "noise": cfg.noise.scale,
                          "seed": cfg.seed},
               "steps_run": res.stats.get("steps_run"), "changed": delta.changed(),
               "unlearned": _forget_metrics(after), "probes": {}}
        for kind in kinds:
            say(f"{name}: {kind} quantization of the unlearned model")
            with quantized(lm.model, kind, cfg.probe.group_size, delta) as q:
                qev = evaluate_sets(q, lm.tokenizer, fr, ev_cfg, utility=False)
            say(f"{name}: {kind} survival map")
            s = survival_map(lm.model, delta, kind, cfg.probe.group_size)
            h = s["ratio_hist"]
            say(f"{name}: {kind}: forget hit rate {_num(qev['forget']['answer_hit_rate'], '.2f')}, P(a|q) "
                f"{_num(qev['forget']['answer_prob'])}; {100 * (s['fraction'] or 0):.1f} % of the changes survive, "
                f"median |Δw| / bin {_num(h['median_ratio'], '.3g')}")
            arm["probes"][kind] = {
                "quantized": _forget_metrics(qev), "recovery": recovery_row(original_eval, after, qev),
                "survival": {"fraction": s["fraction"], "scale_only_fraction": s["scale_only_fraction"],
                             "share": s["share"], "median_ratio": h["median_ratio"],
                             "median_abs_delta": h["median_abs_delta"], "median_bin_width": h["median_bin_width"],
                             "share_at_least_half": h["share_at_least_half"]}}
        if relearn is True or (relearn and name in relearn):
            say(f"{name}: relearning probe")
            rl = journey_relearn(lm, recs, delta, cfg, original_eval, cancel=cancel)
            arm["relearn"] = {k: rl[k] for k in ("recovery", "reference_gain", "config", "seconds")}
            arm["relearn"]["n_train"] = len(rl["split"]["forget"]["train"])
            arm["relearn"]["n_eval"] = len(rl["split"]["forget"]["eval"])
            for part in ("forget", "reference"):  # hit rate and P(a|q) of the measured part, before / after
                r = rl.get(part) or {}
                arm["relearn"][part] = {w: {m: (r.get(w) or {}).get(m) for m in ("answer_hit_rate", "answer_prob")}
                                        for w in ("original", "before", "after") if r.get(w)}
            say(f"{name}: relearning recovery {rl['recovery']}, reference gain {rl.get('reference_gain')}")
        del delta, res
        arm["seconds"] = time.perf_counter() - t0
        out["arms"][name] = arm
        if on_arm is not None:
            on_arm(out)
    say("Done", 1.0)
    return out


# ---------------------------------------------------------------------------------------------- presentation


def _pct(v, digits: int = 0) -> str:
    return "—" if v is None else f"{v:.{digits}f} %"


def _num(v, fmt: str = ".3f") -> str:
    return "—" if v is None else format(v, fmt)


def arm_label(name: str, arm: dict) -> str:
    c = arm["config"]
    what = "all weights" if c["selector"] == "none" else f"{c['selector']} {100 * c['sparsity']:g} %"
    stop = ", stop when forgotten" if c["stop_when_forgotten"] else ""
    return (f"{name} ({what}, {c['objective']}, lr {c['lr']:g}, {arm['steps_run']}/{c['steps']} steps{stop}, "
            f"seed {c['seed']})")


def table_rows(res: dict) -> list[list[str]]:
    """One row per arm × kind: arm, kind, forget hit rate (original → unlearned → quantized), survival fraction,
    median |Δw| / bin width, recovery % of hit rate, answer probability and NLL."""
    o = res["original"]
    rows = []
    for name, arm in res["arms"].items():
        u = arm["unlearned"]
        for kind, p in arm["probes"].items():
            q, r, s = p["quantized"], p["recovery"], p["survival"]
            rows.append([name, kind,
                         f"{_num(o['answer_hit_rate'], '.2f')} → {_num(u['answer_hit_rate'], '.2f')} → "
                         f"{_num(q['answer_hit_rate'], '.2f')}",
                         f"{_num(o['answer_prob'])} → {_num(u['answer_prob'])} → {_num(q['answer_prob'])}",
                         _pct(None if s["fraction"] is None else 100 * s["fraction"], 1),
                         f"{_num(s['median_ratio'], '.3g')} ({_num(s['median_abs_delta'], '.2g')} / "
                         f"{_num(s['median_bin_width'], '.2g')})",
                         _pct(r.get("answer_hit_rate")), _pct(r.get("answer_prob")), _pct(r.get("nll"))])
    return rows


HEADERS = ["arm", "probe", "forget hit rate: original → unlearned → quantized",
           "forget P(a|q): original → unlearned → quantized", "changed weights surviving (code moves)",
           "median |Δw| / bin width (median |Δw| / median bin)", "recovery: hit rate", "recovery: P(a|q)", "recovery: NLL"]


def table_lines(res: dict) -> list[str]:
    """A Markdown table of :func:`table_rows`, preceded by one line per arm describing its settings."""
    kept = res["original"].get("retain_hit_rate")
    lines = [f"- {arm_label(n, a)}: {a['changed']:,} weights changed; retain hit rate "
             f"{_num(kept, '.2f')} → {_num(a['unlearned'].get('retain_hit_rate'), '.2f')}"
             for n, a in res["arms"].items()]
    def row(cells):  # a literal "|" (as in |Δw| or P(a|q)) would end a Markdown cell
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines += ["", row(HEADERS), "|" + "---|" * len(HEADERS)]
    lines += [row(r) for r in table_rows(res)]
    for name, arm in res["arms"].items():
        rl = arm.get("relearn")
        if rl:
            c, rec, gain = rl["config"], rl["recovery"] or {}, rl.get("reference_gain") or {}
            lines.append(f"- {name}, relearning probe ({c['steps']} steps, lr {c['lr']:g}, every weight, on "
                         f"{rl['n_train']} forget examples, measured on the other {rl['n_eval']}): recovery of the "
                         f"hit rate {_pct(rec.get('answer_hit_rate'))}, P(a|q) {_pct(rec.get('answer_prob'))}; "
                         f"the same steps on never-known facts gain {_pct(gain.get('answer_hit_rate'))} and "
                         f"{_pct(gain.get('answer_prob'))}")
    return lines
